"""The mail sink of tests/integration/test_notify.c: aiosmtpd's Mailbox
(one Maildir file per message kept), except that RCPT TO for an address
starting with "slow" is answered only after 3 s, as a slow server would:
time for the test to kill todo-saga in the middle of an SMTP transaction.
A server keeps a mail only once the client has sent all of it (the final
"."), so a client that dies before leaves nothing behind."""
import asyncio

from aiosmtpd.handlers import Mailbox


class SlowMailbox(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("slow"):
            await asyncio.sleep(3)
        envelope.rcpt_tos.append(address)
        return "250 OK"
