-- 005_one_row_per_recipient: a message is its deliveries. Each row carries what a push needs
-- (sender, client message id, target, hops), so a direct message is one row, one insert and
-- no foreign-key checks; the messages table goes (docs/benchmarks.md, "Round two").
--
-- Idempotency moves into the keys: a new message's id is derived from (mesh, sender key,
-- client message id) (lib/broker/send.ts, messageIdOf), so a retry lands on the rows of its
-- first copy: on the primary key (message_id, recipient_key), and, if it names other
-- recipients, on deliveries_one_message, which holds each message's first row once. Rows
-- written before this migration keep their random ids and are marked `legacy`; a retry of
-- one of them is found through deliveries_legacy until the sweep purges them.

ALTER TABLE deliveries
  ADD COLUMN sender_key        text,
  ADD COLUMN sender_member_key text,
  ADD COLUMN client_message_id text,
  ADD COLUMN fingerprint       text,
  ADD COLUMN target            text,
  ADD COLUMN hops              smallint,
  ADD COLUMN first_row         boolean NOT NULL DEFAULT false,
  ADD COLUMN legacy            boolean NOT NULL DEFAULT false;

UPDATE deliveries d
SET sender_key = m.sender_key, sender_member_key = m.sender_member_key, client_message_id = m.client_message_id,
    fingerprint = m.fingerprint, target = m.target, hops = m.hops, queued_at = m.created_at, legacy = true
FROM messages m
WHERE m.id = d.message_id;

ALTER TABLE deliveries
  ALTER COLUMN sender_key SET NOT NULL,
  ALTER COLUMN sender_member_key SET NOT NULL,
  ALTER COLUMN client_message_id SET NOT NULL,
  ALTER COLUMN fingerprint SET NOT NULL,
  ALTER COLUMN target SET NOT NULL,
  ALTER COLUMN hops SET NOT NULL,
  ADD CONSTRAINT deliveries_client_message_id_check CHECK (length(client_message_id) BETWEEN 1 AND 128);

-- The row's identity is (message, recipient); `id` stays only as the queue's order.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_message_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_message_id_recipient_pubkey_key;
ALTER TABLE deliveries ADD PRIMARY KEY (message_id, recipient_key);
DROP TABLE messages;

-- Each index is written on every send: keep only those a hot query needs. The expiry sweep
-- and the claim release read the queued index (queued rows are few); the purge reads a BRIN
-- range index over the insert order, which costs next to nothing to keep.
DROP INDEX deliveries_queued_expiry;
DROP INDEX deliveries_queued_claim;
CREATE INDEX deliveries_age ON deliveries USING brin (queued_at);
CREATE INDEX deliveries_legacy ON deliveries (mesh_id, sender_key, client_message_id) WHERE legacy;
CREATE UNIQUE INDEX deliveries_one_message ON deliveries (message_id) WHERE first_row;
