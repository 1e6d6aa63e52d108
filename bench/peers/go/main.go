// todo-go-peer: the implementation a team would otherwise write, as a
// measuring instrument for bench/peers.sh (issue 19). GetTask and ListTasks
// of todo.v1.TaskQueryService and CreateTask of todo.v1.TaskCommandService
// on grpc-go, a pgx pool of 8 and golang-jwt: the same bearer-token check
// (HS256 with TODO_JWT_SECRET: signature, exp, sub), the same SELECTs on the
// same read schema as todo-query, and CreateTask as the two-row transaction
// of the pgbench baseline (a task row and an event row in the bench schema;
// no outbox relay behind it). Idiomatic and untuned: library defaults, a
// pool of 8.
//
//	PEER_ADDR=127.0.0.1:50071 TODO_PG_URL=... TODO_JWT_SECRET=... todo-go-peer
//
// Other RPCs answer UNIMPLEMENTED; ListTasks takes page_size and page_token
// and no filters.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "todo.bench/peer/pb"
)

const taskSelect = `select id::text, user_id, title, description, priority,
 (extract(epoch from due_at) * 1000000)::bigint, completed,
 (extract(epoch from completed_at) * 1000000)::bigint, category, array_to_string(tags, E'\x1f'),
 (extract(epoch from created_at) * 1000000)::bigint, (extract(epoch from updated_at) * 1000000)::bigint,
 version, (due_at is not null and due_at < now() and not completed),
 coalesce(recurring_pattern_id::text, '')`

type userKey struct{}

type server struct {
	pb.UnimplementedTaskQueryServiceServer
	pb.UnimplementedTaskCommandServiceServer
	pool   *pgxpool.Pool
	secret []byte
}

// authenticate checks the bearer token of every call and puts its subject
// in the context.
func (s *server) authenticate(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) == 0 || !strings.HasPrefix(auth[0], "Bearer ") {
		return nil, status.Error(codes.Unauthenticated, "missing bearer token")
	}
	tok, err := jwt.Parse(strings.TrimPrefix(auth[0], "Bearer "), func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "bearer token: %v", err)
	}
	sub, err := tok.Claims.GetSubject()
	if err != nil || sub == "" {
		return nil, status.Error(codes.Unauthenticated, "bearer token has no sub")
	}
	return next(context.WithValue(ctx, userKey{}, sub), req)
}

func ts(us *int64) *timestamppb.Timestamp {
	if us == nil {
		return nil
	}
	return timestamppb.New(time.UnixMicro(*us))
}

func scanTask(row pgx.Row, extra ...any) (*pb.Task, error) {
	var t pb.Task
	var prio int32
	var due, done *int64
	var created, updated int64
	var tags string
	dest := []any{&t.Id, &t.UserId, &t.Title, &t.Description, &prio, &due, &t.Completed, &done, &t.Category, &tags,
		&created, &updated, &t.Version, &t.Overdue, &t.RecurringPatternId}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return nil, err
	}
	t.Priority = pb.Priority(prio)
	t.DueAt, t.CompletedAt = ts(due), ts(done)
	t.CreatedAt, t.UpdatedAt = ts(&created), ts(&updated)
	if tags != "" {
		t.Tags = strings.Split(tags, "\x1f")
	}
	return &t, nil
}

func (s *server) GetTask(ctx context.Context, rq *pb.GetTaskRequest) (*pb.Task, error) {
	user := ctx.Value(userKey{}).(string)
	if _, err := uuid.Parse(rq.TaskId); err != nil {
		return nil, status.Error(codes.InvalidArgument, "task_id: must be a UUID")
	}
	t, err := scanTask(s.pool.QueryRow(ctx, taskSelect+` from read.tasks where id = $1 and user_id = $2 and not deleted`,
		rq.TaskId, user))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, status.Errorf(codes.NotFound, "task %s not found", rq.TaskId)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading the task: %v", err)
	}
	return t, nil
}

func (s *server) ListTasks(ctx context.Context, rq *pb.ListTasksRequest) (*pb.ListTasksResponse, error) {
	user := ctx.Value(userKey{}).(string)
	size := int(rq.PageSize)
	if size == 0 {
		size = 20
	}
	if size < 1 || size > 100 {
		return nil, status.Error(codes.InvalidArgument, "page_size: must be 1..100")
	}
	where, args := ` from read.tasks where user_id = $1 and not deleted`, []any{user}
	if rq.PageToken != "" { // "<created_at µs>|<id>" of the last task of the previous page
		raw, err := base64.RawURLEncoding.DecodeString(rq.PageToken)
		at, id, ok := strings.Cut(string(raw), "|")
		us, perr := strconv.ParseInt(at, 10, 64)
		if err != nil || !ok || perr != nil {
			return nil, status.Error(codes.InvalidArgument, "page_token: not one this service issued")
		}
		where += ` and (created_at, id) < (to_timestamp($2::float8 / 1000000), $3::uuid)`
		args = append(args, us, id)
	}
	args = append(args, size+1)
	rows, err := s.pool.Query(ctx, taskSelect+where+fmt.Sprintf(` order by created_at desc, id desc limit $%d`, len(args)),
		args...)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "listing tasks: %v", err)
	}
	defer rows.Close()
	resp := &pb.ListTasksResponse{}
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "listing tasks: %v", err)
		}
		resp.Tasks = append(resp.Tasks, t)
	}
	if err := rows.Err(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "listing tasks: %v", err)
	}
	if len(resp.Tasks) > size {
		last := resp.Tasks[size-1]
		resp.Tasks = resp.Tasks[:size]
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString(
			[]byte(fmt.Sprintf("%d|%s", last.CreatedAt.AsTime().UnixMicro(), last.Id)))
	}
	return resp, nil
}

func (s *server) CreateTask(ctx context.Context, rq *pb.CreateTaskRequest) (*pb.CommandReply, error) {
	user := ctx.Value(userKey{}).(string)
	if n := len([]rune(rq.Title)); n < 1 || n > 255 {
		return nil, status.Error(codes.InvalidArgument, "title: must be 1..255 characters")
	}
	prio := rq.Priority
	if prio == pb.Priority_PRIORITY_UNSPECIFIED {
		prio = pb.Priority_PRIORITY_MEDIUM
	}
	now := time.Now()
	task := &pb.Task{Id: uuid.NewString(), UserId: user, Title: rq.Title, Description: rq.Description, Priority: prio,
		DueAt: rq.DueAt, Category: rq.Category, Tags: rq.Tags, CreatedAt: timestamppb.New(now),
		UpdatedAt: timestamppb.New(now), Version: 1}
	envelope, err := proto.Marshal(task)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding the event: %v", err)
	}
	tags := rq.Tags
	if tags == nil {
		tags = []string{} // an empty array, not NULL
	}
	eventID := uuid.NewString()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `insert into bench.tasks (id, user_id, title, description, priority, category, tags,
			version, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)`,
			task.Id, user, task.Title, task.Description, int32(prio), task.Category, tags, now); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `insert into bench.events (event_id, event_type, schema_version, user_id, aggregate_type,
			aggregate_id, aggregate_version, envelope) values ($1, 'task.created', 2, $2, 'task', $3, 1, $4)`,
			eventID, user, task.Id, envelope)
		return err
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "recording the task: %v", err)
	}
	return &pb.CommandReply{Id: task.Id, Version: 1, EventId: eventID}, nil
}

func main() {
	addr, url, secret := os.Getenv("PEER_ADDR"), os.Getenv("TODO_PG_URL"), os.Getenv("TODO_JWT_SECRET")
	if addr == "" || url == "" || secret == "" {
		log.Fatal("todo-go-peer: PEER_ADDR, TODO_PG_URL and TODO_JWT_SECRET must be set")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		log.Fatalf("todo-go-peer: TODO_PG_URL: %v", err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		log.Fatalf("todo-go-peer: %v", err)
	}
	defer pool.Close()
	s := &server{pool: pool, secret: []byte(secret)}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("todo-go-peer: %v", err)
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(s.authenticate))
	pb.RegisterTaskQueryServiceServer(g, s)
	pb.RegisterTaskCommandServiceServer(g, s)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-stop; g.GracefulStop() }()
	log.Printf("todo-go-peer: serving on %s", addr)
	if err := g.Serve(lis); err != nil {
		log.Fatalf("todo-go-peer: %v", err)
	}
}
