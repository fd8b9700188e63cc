-- 009_deliveries_fewer_statistics: no planner statistics for the columns that are only ever
-- read after a key picked the row, or filtered beside a key that already narrowed it to a few
-- rows: who sent it, its client id, who holds its claim, its counters and its later times.
-- The broker analyzes `deliveries` at each fourfold growth of its own inserts
-- (lib/broker/send.ts), three times in a 30 s run at 1,000 msg/s from an empty table, and a
-- CPU profile of Postgres there put 8 % of its time in ANALYZE, most of it sorting the
-- samples of these text columns. Measured on 16,000 and 64,000 rows: ANALYZE 112 → 60 ms and
-- 331 → 194 ms, fastest of five (docs/benchmarks.md, round seven). The keys the hot queries
-- look rows up by (message, mesh, recipient), the state, the priority, the times the queue
-- and the sweeps filter on and the two flags keep theirs. Metadata only.
ALTER TABLE deliveries
  ALTER COLUMN sender_key SET STATISTICS 0,
  ALTER COLUMN sender_member_key SET STATISTICS 0,
  ALTER COLUMN client_message_id SET STATISTICS 0,
  ALTER COLUMN claimed_by SET STATISTICS 0,
  ALTER COLUMN hops SET STATISTICS 0,
  ALTER COLUMN pushes SET STATISTICS 0,
  ALTER COLUMN delivered_at SET STATISTICS 0,
  ALTER COLUMN surfaced_at SET STATISTICS 0,
  ALTER COLUMN read_at SET STATISTICS 0,
  ALTER COLUMN expired_at SET STATISTICS 0;
