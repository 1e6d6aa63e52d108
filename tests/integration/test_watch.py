#!/usr/bin/python3
"""WatchUpdates end to end, with a Python grpcio client (Debian's
python3-grpcio): todo-command, todo-projector and todo-query on the test
stack; messages built from the descriptor set the build embeds, so no
generated code.

Checked, each for a user of its own:
  - from now: a keep-alive with the current position first, then each
    change as it is projected, in order, with the item as the read model
    shows it; keep-alives while nothing happens;
  - a reconnect with the last position seen misses nothing and repeats
    nothing, also across a restart of todo-query (its stream ends with
    UNAVAILABLE at shutdown);
  - a start from a command's consistency token;
  - what is refused, and how (OUT_OF_RANGE, INVALID_ARGUMENT,
    UNAUTHENTICATED), a position or token whose updates were pruned
    included;
  - a client that reads nothing while its updates pile up is ended with
    RESOURCE_EXHAUSTED, after everything its buffer held, and resumes;
  - the hub LISTENs to the projector's notifications only while streams
    are open (todo_watch_listening): without them, no batch wakes it.

usage: test_watch.py BIN_DIR (build/<tree>/src)
"""
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/dev/src"
DESC = os.path.join(BIN, "..", "gen", "todo_descriptors.pb")
LOGS = os.path.join(BIN, "..", "tests", "logs")
KEEPALIVE_MS = 400
STALL_MS = 1500
WAIT_S = 20  # the longest any expected message may take (a failure, not a measurement)

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


def load_messages():
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(DESC, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    factory = message_factory.MessageFactory(pool)

    def cls(name):
        d = pool.FindMessageTypeByName(name)
        get = getattr(message_factory, "GetMessageClass", None)
        return get(d) if get else factory.GetPrototype(d)
    return cls


msg = load_messages()
CreateTask, CompleteTask, UpdateTask = msg("todo.v1.CreateTaskRequest"), msg("todo.v1.CompleteTaskRequest"), \
    msg("todo.v1.UpdateTaskRequest")
CommandReply, WatchRequest, Update = msg("todo.v1.CommandReply"), msg("todo.v1.WatchUpdatesRequest"), \
    msg("todo.v1.Update")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Services:
    def __init__(self):
        os.makedirs(LOGS, exist_ok=True)
        self.command = "127.0.0.1:%d" % free_port()
        self.query = "127.0.0.1:%d" % free_port()
        self.query_metrics = "127.0.0.1:%d" % free_port()
        self.env = dict(os.environ, TODO_COMMAND_ADDR=self.command, TODO_QUERY_ADDR=self.query,
                        TODO_WATCH_KEEPALIVE_MS=str(KEEPALIVE_MS), TODO_WATCH_STALL_MS=str(STALL_MS),
                        TODO_QUERY_METRICS_ADDR=self.query_metrics,
                        TODO_COMMAND_METRICS_ADDR="127.0.0.1:%d" % free_port(),
                        TODO_PROJECTOR_METRICS_ADDR="127.0.0.1:%d" % free_port())
        self.env.pop("TODO_METRICS", None)
        self.procs = {}
        for name in ("command", "projection", "query"):
            self.start(name)
        self.cmd = grpc.insecure_channel(self.command)

    def start(self, name):
        exe = {"command": "command/todo-command", "projection": "projection/todo-projector",
               "query": "query/todo-query"}[name]
        log = open(os.path.join(LOGS, "watch-%s.log" % name), "a")
        self.procs[name] = subprocess.Popen([os.path.join(BIN, exe)], env=self.env, stdout=log, stderr=log)
        if name in ("command", "query"):
            addr = self.command if name == "command" else self.query
            ch = grpc.insecure_channel(addr)
            grpc.channel_ready_future(ch).result(timeout=WAIT_S)
            ch.close()

    def stop(self, name):
        """Stops a service; it must exit cleanly (0: under the sanitizers,
        a leak or an error is a non-zero exit)."""
        p = self.procs.pop(name)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=WAIT_S)
        check(rc == 0, "%s exits cleanly (exit status %s; see %s)" % (name, rc, LOGS))
        return rc

    def close(self):
        self.cmd.close()
        for name in list(self.procs):
            self.stop(name)


def token(user):
    out = subprocess.run([os.path.join(BIN, "cli", "todoctl"), "token", "--user", user], check=True,
                         capture_output=True, text=True)
    return [("authorization", "Bearer " + out.stdout.strip())]


def command(svc, method, req, md):
    call = svc.cmd.unary_unary("/todo.v1.TaskCommandService/" + method,
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=CommandReply.FromString)
    return call(req, metadata=md, timeout=WAIT_S)


class Watch:
    """An open WatchUpdates stream, read by a thread into a queue (or not
    read at all: read=False)."""

    def __init__(self, addr, md, read=True, **req):
        self.ch = grpc.insecure_channel(addr)
        call = self.ch.unary_stream("/todo.v1.TaskQueryService/WatchUpdates",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=Update.FromString)
        self.it = call(WatchRequest(**req), metadata=md)
        self.q = queue.Queue()
        self.end = None
        if read:
            self.start_reading()

    def start_reading(self):
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for u in self.it:
                self.q.put(u)
            self.end = (grpc.StatusCode.OK, "")
        except grpc.RpcError as e:
            self.end = (e.code(), e.details())
        self.q.put(None)

    def next(self, keepalives=False):
        """The next message (keep-alives skipped unless asked for), or None
        once the stream ended."""
        deadline = time.time() + WAIT_S
        while True:
            u = self.q.get(timeout=max(0.1, deadline - time.time()))
            if u is None or keepalives or u.WhichOneof("item") != "keep_alive":
                return u

    def close(self):
        self.it.cancel()
        self.ch.close()


def refused(addr, md, **req):
    w = Watch(addr, md, **req)
    u = w.next(keepalives=True)
    end = w.end
    w.close()
    return u, end


def listening(svc):
    """todo-query's todo_watch_listening gauge (None: not there)."""
    with urllib.request.urlopen("http://%s/metrics" % svc.query_metrics, timeout=WAIT_S) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("todo_watch_listening "):
                return float(line.split()[1])
    return None


def eventually(fn, want):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        got = fn()
        if got == want:
            return got
        time.sleep(0.1)
    return fn()


def test_listens_only_while_streams_are_open(svc):
    md = token("watch-listen-" + uuid.uuid4().hex[:8])
    check(eventually(lambda: listening(svc), 0) == 0, "without streams the hub does not LISTEN")
    command(svc, "CreateTask", CreateTask(title="Nobody watches this one"), md)
    w = Watch(svc.query, md)
    w.next(keepalives=True)
    check(eventually(lambda: listening(svc), 1) == 1, "with a stream open the hub LISTENs")
    t = command(svc, "CreateTask", CreateTask(title="Watched"), md)
    u = w.next()
    if u is not None and u.entity_id != t.id:  # the first task, if projected after the stream began
        u = w.next()
    check(u is not None and u.entity_id == t.id and u.task.title == "Watched",
          "a stream opened while the hub did not listen gets what follows")
    w.close()
    check(eventually(lambda: listening(svc), 0) == 0, "once the last stream is over the hub stops listening")


def test_from_now_in_order(svc):
    md = token("watch-now-" + uuid.uuid4().hex[:8])
    w = Watch(svc.query, md)
    first = w.next(keepalives=True)
    check(first is not None and first.WhichOneof("item") == "keep_alive" and first.position == 0,
          "a new user's stream starts with a keep-alive at position 0")
    t = command(svc, "CreateTask", CreateTask(title="Water the plants"), md)
    command(svc, "CompleteTask", CompleteTask(task_id=t.id), md)
    u1, u2 = w.next(), w.next()
    check(u1.position == 1 and u1.event_type == "task.created" and u1.entity_id == t.id and u1.version == 1
          and u1.WhichOneof("item") == "task" and u1.task.title == "Water the plants",
          "the created task arrives at position 1 with its title")
    check(u2.position == 2 and u2.event_type == "task.completed" and u2.version == 2 and u2.task.completed,
          "its completion follows at position 2")
    ka = [w.next(keepalives=True) for _ in range(2)]
    check(all(k.WhichOneof("item") == "keep_alive" and k.position == 2 for k in ka),
          "an idle stream gets keep-alives carrying its position")
    w.close()


def test_resume(svc):
    md = token("watch-resume-" + uuid.uuid4().hex[:8])
    w = Watch(svc.query, md)
    w.next(keepalives=True)
    t = command(svc, "CreateTask", CreateTask(title="first"), md)
    seen = [w.next().position]
    w.close()
    # Changes while no stream is open...
    for i in range(3):
        rq = UpdateTask(task_id=t.id, title="title %d" % i)
        rq.update_mask.paths.append("title")
        command(svc, "UpdateTask", rq, md)
    w = Watch(svc.query, md, after_position=seen[-1])
    first = w.next(keepalives=True)
    check(first.WhichOneof("item") == "keep_alive" and first.position == seen[-1],
          "a resumed stream starts with a keep-alive at the position asked")
    for _ in range(3):
        seen.append(w.next().position)
    # ...then todo-query restarts under an open stream.
    svc.stop("query")
    while w.next() is not None:
        pass
    check(w.end is not None and w.end[0] == grpc.StatusCode.UNAVAILABLE,
          "the stream ends with UNAVAILABLE when todo-query stops (%s)" % (w.end,))
    w.close()
    command(svc, "CompleteTask", CompleteTask(task_id=t.id), md)
    t2 = command(svc, "CreateTask", CreateTask(title="second"), md)
    svc.start("query")
    w = Watch(svc.query, md, after_position=seen[-1])
    for _ in range(2):
        seen.append(w.next().position)
    check(seen == [1, 2, 3, 4, 5, 6], "across two reconnects nothing was missed or repeated: %s" % seen)
    last = w.next(keepalives=True)
    check(last.WhichOneof("item") == "keep_alive", "and nothing more came")
    w.close()
    # A start from the consistency token of the create of t2 (position 6).
    w = Watch(svc.query, md, consistency_token=t2.consistency_token)
    first = w.next(keepalives=True)
    check(first.WhichOneof("item") == "keep_alive" and first.position == 6,
          "a stream from a consistency token starts after that write (position %d)" % first.position)
    command(svc, "CompleteTask", CompleteTask(task_id=t2.id), md)
    u = w.next()
    check(u.position == 7 and u.event_type == "task.completed", "and goes on from there")
    w.close()


def test_refusals(svc):
    md = token("watch-refused-" + uuid.uuid4().hex[:8])
    _, end = refused(svc.query, md, after_position=5)
    check(end[0] == grpc.StatusCode.OUT_OF_RANGE and "ahead of the feed" in end[1],
          "a position ahead of the feed: OUT_OF_RANGE (%s)" % (end,))
    _, end = refused(svc.query, md, after_position=-2)
    check(end[0] == grpc.StatusCode.INVALID_ARGUMENT and "after_position" in end[1],
          "a negative position: INVALID_ARGUMENT (%s)" % (end,))
    _, end = refused(svc.query, md, after_position=1, consistency_token="x")
    check(end[0] == grpc.StatusCode.INVALID_ARGUMENT and "not both" in end[1],
          "a position and a token: INVALID_ARGUMENT (%s)" % (end,))
    _, end = refused(svc.query, [], after_position=0)
    check(end[0] == grpc.StatusCode.UNAUTHENTICATED, "no token: UNAUTHENTICATED (%s)" % (end,))


def test_pruned(svc):
    user = "watch-pruned-" + uuid.uuid4().hex[:8]
    md = token(user)
    w = Watch(svc.query, md)
    w.next(keepalives=True)
    t = command(svc, "CreateTask", CreateTask(title="old news"), md)
    command(svc, "CompleteTask", CompleteTask(task_id=t.id), md)
    command(svc, "CreateTask", CreateTask(title="recent"), md)
    check([w.next().position for _ in range(3)] == [1, 2, 3], "three updates")
    w.close()
    # What TODO_FEED_RETENTION_HOURS would drop, dropped by hand.
    subprocess.run(["psql", "-q", os.environ["TODO_PG_URL"], "-c",
                    "delete from feed.updates where user_id = '%s' and position <= 2" % user], check=True)
    _, end = refused(svc.query, md, after_position=1)
    check(end[0] == grpc.StatusCode.OUT_OF_RANGE and "no longer keeps" in end[1],
          "a position whose next update was pruned: OUT_OF_RANGE (%s)" % (end,))
    _, end = refused(svc.query, md, consistency_token=t.consistency_token)
    check(end[0] == grpc.StatusCode.OUT_OF_RANGE and "consistency_token" in end[1],
          "a token whose change was pruned: OUT_OF_RANGE (%s)" % (end,))
    w = Watch(svc.query, md, after_position=2)
    u = w.next()
    check(u.position == 3 and u.task.title == "recent", "a position still kept resumes")
    w.close()


def test_slow_client(svc):
    md = token("watch-slow-" + uuid.uuid4().hex[:8])
    ended_before = open(os.path.join(LOGS, "watch-query.log")).read().count(
        "ending a watch stream whose client reads nothing")
    # A small HTTP/2 window and no window growth: what the client does not
    # read stays in the server's bounded buffer.
    w = Watch(svc.query, md, read=False)
    w.ch.close()
    w.ch = grpc.insecure_channel(svc.query, options=[("grpc.http2.lookahead_bytes", 1024),
                                                     ("grpc.http2.bdp_probe", 0)])
    call = w.ch.unary_stream("/todo.v1.TaskQueryService/WatchUpdates",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=Update.FromString)
    w.it = call(WatchRequest(), metadata=md)
    start = next(w.it).position  # the first keep-alive: the stream is registered, from here on nothing is missed
    n = 150
    for i in range(n):
        command(svc, "CreateTask", CreateTask(title="pile %d" % i, description="x" * 200), md)
    # Once todo-query says it ended the stream, the client reads.
    log = os.path.join(LOGS, "watch-query.log")
    deadline = time.time() + WAIT_S * 3
    while open(log).read().count("ending a watch stream whose client reads nothing") <= ended_before \
            and time.time() < deadline:
        time.sleep(0.1)
    w.start_reading()
    got = []
    while True:
        u = w.next()
        if u is None:
            break
        got.append(u.position)
    check(w.end is not None and w.end[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and "after_position" in w.end[1],
          "a client that reads nothing is ended with RESOURCE_EXHAUSTED (%s)" % (w.end,))
    # What reached the client before the end (the server drops what it
    # still held for it), in order.
    check(got == list(range(start + 1, start + len(got) + 1)) and len(got) < n,
          "after the %d updates it had in order (of %d)" % (len(got), n))
    w.close()
    w = Watch(svc.query, md, after_position=got[-1] if got else start)
    rest = []
    while len(got) + len(rest) < n:
        rest.append(w.next().position)
    check(got + rest == list(range(start + 1, start + n + 1)), "resuming from the last position got delivers the rest")
    w.close()


def main():
    if not os.environ.get("TODO_STACK"):
        print("SKIP: no stack")
        return 0
    svc = Services()
    try:
        for t in (test_listens_only_while_streams_are_open, test_from_now_in_order, test_resume, test_refusals, test_pruned, test_slow_client):
            try:
                t(svc)
            except Exception as e:  # a timeout or a broken stream: the test fails, the others run
                check(False, "%s: %r" % (t.__name__, e))
    finally:
        svc.close()
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
