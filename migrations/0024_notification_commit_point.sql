-- Email is never sent twice (issue 15): the dispatcher marks a notification
-- 'committing' just before it ends the SMTP transaction (the final "."
-- after which the server keeps the mail). A crash before the mark resends
-- (the server kept nothing); a row found 'committing' after a crash is not
-- sent again, and is recorded as failed with the outcome unknown.
alter table saga.notifications drop constraint notifications_status_check;
alter table saga.notifications add constraint notifications_status_check
  check (status in ('sending', 'committing', 'sent', 'failed'));
