-- Held: an open delivery with an ordering key that is not the oldest open one of its flow and key. Claims and
-- the worker's look for the next due time leave held rows out, so deliveries queued behind a retrying head cost
-- nothing to walk past. Kept by the triggers below, in the same statement as the change that moves a key's head
-- (a delivery of the key inserted open, or one becoming open or closed), so it is never stale.
ALTER TABLE deliveries ADD COLUMN held INTEGER NOT NULL DEFAULT 0;

UPDATE deliveries SET held = 1
WHERE order_key IS NOT NULL AND status IN ('pending', 'retrying', 'in_flight')
  AND EXISTS (SELECT 1 FROM deliveries p
              WHERE p.flow = deliveries.flow AND p.order_key = deliveries.order_key AND p.id < deliveries.id
                AND p.status IN ('pending', 'retrying', 'in_flight'));

DROP INDEX deliveries_queue;
CREATE INDEX deliveries_queue ON deliveries (next_at)
    WHERE status IN ('pending', 'retrying', 'in_flight') AND held = 0;
-- The heads of each key (normally one row): what the triggers walk to hold a key's rows behind its head.
CREATE INDEX deliveries_heads ON deliveries (flow, order_key, id)
    WHERE order_key IS NOT NULL AND status IN ('pending', 'retrying', 'in_flight') AND held = 0;

-- Settles a key: every open row of it held but the oldest, the oldest not held.
CREATE TRIGGER deliveries_held_insert AFTER INSERT ON deliveries
WHEN NEW.order_key IS NOT NULL AND NEW.status IN ('pending', 'retrying', 'in_flight')
BEGIN
    UPDATE deliveries SET held = 1
    WHERE flow = NEW.flow AND order_key = NEW.order_key AND status IN ('pending', 'retrying', 'in_flight')
      AND held = 0
      AND id > (SELECT id FROM deliveries
                WHERE flow = NEW.flow AND order_key = NEW.order_key AND status IN ('pending', 'retrying', 'in_flight')
                ORDER BY id LIMIT 1);
    UPDATE deliveries SET held = 0
    WHERE held = 1
      AND id = (SELECT id FROM deliveries
                WHERE flow = NEW.flow AND order_key = NEW.order_key AND status IN ('pending', 'retrying', 'in_flight')
                ORDER BY id LIMIT 1);
END;

CREATE TRIGGER deliveries_held_status AFTER UPDATE OF status ON deliveries
WHEN NEW.order_key IS NOT NULL
 AND (OLD.status IN ('pending', 'retrying', 'in_flight')) != (NEW.status IN ('pending', 'retrying', 'in_flight'))
BEGIN
    UPDATE deliveries SET held = 1
    WHERE flow = NEW.flow AND order_key = NEW.order_key AND status IN ('pending', 'retrying', 'in_flight')
      AND held = 0
      AND id > (SELECT id FROM deliveries
                WHERE flow = NEW.flow AND order_key = NEW.order_key AND status IN ('pending', 'retrying', 'in_flight')
                ORDER BY id LIMIT 1);
    UPDATE deliveries SET held = 0
    WHERE held = 1
      AND id = (SELECT id FROM deliveries
                WHERE flow = NEW.flow AND order_key = NEW.order_key AND status IN ('pending', 'retrying', 'in_flight')
                ORDER BY id LIMIT 1);
END;
