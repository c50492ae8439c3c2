-- Held: an open delivery with an ordering key that is not the oldest open one of its flow and key. Claims and
-- the worker's look for the next due time leave held rows out, so deliveries queued behind a retrying head cost
-- nothing to walk past. Kept by the trigger below, in the same transaction as the change that moves a key's
-- head (a delivery of the key inserted open, or one becoming open or closed), under the key's advisory lock
-- (the one ingest takes), so two transactions never settle one key at once.
ALTER TABLE deliveries ADD COLUMN held BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE deliveries d SET held = TRUE
WHERE d.order_key IS NOT NULL AND d.status IN ('pending', 'retrying', 'in_flight')
  AND EXISTS (SELECT 1 FROM deliveries p
              WHERE p.flow = d.flow AND p.order_key = d.order_key AND p.id < d.id
                AND p.status IN ('pending', 'retrying', 'in_flight'));

DROP INDEX deliveries_queue;
CREATE INDEX deliveries_queue ON deliveries (next_at)
    WHERE status IN ('pending', 'retrying', 'in_flight') AND NOT held;
-- The heads of each key (normally one row): what the trigger walks to hold a key's rows behind its head.
CREATE INDEX deliveries_heads ON deliveries (flow, order_key, id)
    WHERE order_key IS NOT NULL AND status IN ('pending', 'retrying', 'in_flight') AND NOT held;

-- Settles a key: every open row of it held but the oldest, the oldest not held. Each statement of a volatile
-- function reads a fresh snapshot, so after the lock it sees what the key's last holder committed.
CREATE FUNCTION renkei_settle_key() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('renkei:order_key:' || COALESCE(current_schema(), '')),
                                  hashtext(NEW.flow || chr(31) || NEW.order_key));
    SELECT id INTO head FROM deliveries
    WHERE flow = NEW.flow AND order_key = NEW.order_key AND status IN ('pending', 'retrying', 'in_flight')
    ORDER BY id LIMIT 1;
    UPDATE deliveries SET held = TRUE
    WHERE flow = NEW.flow AND order_key = NEW.order_key AND status IN ('pending', 'retrying', 'in_flight')
      AND NOT held AND id <> head;
    UPDATE deliveries SET held = FALSE WHERE id = head AND held;
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_held_insert AFTER INSERT ON deliveries FOR EACH ROW
    WHEN (NEW.order_key IS NOT NULL AND NEW.status IN ('pending', 'retrying', 'in_flight'))
    EXECUTE FUNCTION renkei_settle_key();

CREATE TRIGGER deliveries_held_status AFTER UPDATE OF status ON deliveries FOR EACH ROW
    WHEN (NEW.order_key IS NOT NULL
          AND (OLD.status IN ('pending', 'retrying', 'in_flight')) <> (NEW.status IN ('pending', 'retrying', 'in_flight')))
    EXECUTE FUNCTION renkei_settle_key();
