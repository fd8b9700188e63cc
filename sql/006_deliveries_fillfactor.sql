-- 006_deliveries_fillfactor: every delivery row is updated at least once (its ack), and that
-- update can never be HOT: it changes `state`, which the queue's partial index
-- (deliveries_queued) names in its predicate. With full pages the new version goes to another
-- page and the whole row is written to the WAL again; with a fifth of each page kept free it
-- stays on its page, and the WAL record carries only the bytes that changed. Measured in one
-- 100×1,000 burst: ack WAL 56 → 44 MB, ack statement time 34 → 25–31 µs a row, Postgres CPU
-- 6.7–7.6 → 6.1 s (docs/benchmarks.md, round four). Only pages written from now on are
-- filled to 80 %: no rewrite, no lock beyond the moment of the ALTER.
ALTER TABLE deliveries SET (fillfactor = 80);
