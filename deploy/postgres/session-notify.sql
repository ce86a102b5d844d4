-- wsgate --pg-notify: tell gateways at once when an express-session record in connect-pg-simple's
-- table ends or changes, so a logout closes that user's sockets within a second.
--
-- Notifies channel wsgate_session with the session id when a row is deleted (logout, destroy,
-- connect-pg-simple's pruning of expired rows) or its `sess` changes (login into the session,
-- another user, logout without regenerate). express-session's touch changes only `expire` and
-- notifies nothing. The payload is the session id alone: no session data leaves the table. A
-- TRUNCATE notifies once with an empty payload: every session is read again.
--
-- Run once per database, as the table's owner, e.g.
--   psql "$DATABASE_URL" -f deploy/postgres/session-notify.sql
-- For another table or schema than connect-pg-simple's default "session", edit the two triggers.

CREATE OR REPLACE FUNCTION wsgate_session_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('wsgate_session', '');
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('wsgate_session', OLD.sid);
  ELSIF OLD.sess::text IS DISTINCT FROM NEW.sess::text THEN
    PERFORM pg_notify('wsgate_session', NEW.sid);
  END IF;
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS wsgate_session_notify ON "session";
CREATE TRIGGER wsgate_session_notify
  AFTER UPDATE OR DELETE ON "session"
  FOR EACH ROW EXECUTE FUNCTION wsgate_session_notify();
DROP TRIGGER IF EXISTS wsgate_session_notify_truncate ON "session";
CREATE TRIGGER wsgate_session_notify_truncate
  AFTER TRUNCATE ON "session"
  FOR EACH STATEMENT EXECUTE FUNCTION wsgate_session_notify();
