-- 008_one_unique_index: each delivery row in one unique b-tree instead of two.
--
-- Until now a row sat in the primary key (message_id, recipient_key) and, when it was its
-- message's first row, in deliveries_one_message (message_id), which catches a retry that
-- names other recipients (CM_ERR_IDEMPOTENCY_CONFLICT). A direct message's only row is its
-- first, so it paid for both b-trees on its insert, and again on its ack, which is never a
-- HOT update (docs/benchmarks.md, round seven: about a sixth of Postgres's CPU per message).
--
-- `slot` folds the two keys into one: empty for a message's first row, the recipient for the
-- others. A retry meets its first copy's first row whatever recipients it names, and each of
-- its other rows meets its twin, so (message_id, slot) turns away everything the two indexes
-- did. One difference: a first row and another row of the same message may now name the same
-- recipient; the broker refuses such a send before it reaches the table (checkRecipients in
-- lib/broker/send-checks.ts), and takes a retry's rows out again by this key, not by the
-- recipient (delete_deliveries in sql/queries/broker.sql). A recipient's row is found by its
-- message id and slot = ANY ('', its key): two probes of the key.
--
-- Adding a stored column rewrites the table under an exclusive lock: a large queue waits for
-- it once, at the upgrade. Like the envelope in 007, the slot gets no planner statistics: it
-- is only ever looked up beside its message id.
ALTER TABLE deliveries
  ADD COLUMN slot text GENERATED ALWAYS AS (CASE WHEN first_row THEN '' ELSE recipient_key END) STORED;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_pkey;
DROP INDEX deliveries_one_message;
ALTER TABLE deliveries ADD PRIMARY KEY (message_id, slot);
ALTER TABLE deliveries ALTER COLUMN slot SET STATISTICS 0;
