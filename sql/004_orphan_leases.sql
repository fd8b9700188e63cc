-- 004_orphan_leases: a presence whose instance stopped or died keeps its lease with no
-- instance behind it (instance_id NULL), so that a peer reconnecting to another instance
-- inside the lease is a silent reattach; a living instance ends each lease that runs out.
-- Rows written before this migration always named an instance: NULL now means "orphaned".
UPDATE presences SET instance_id = 'before-004' WHERE instance_id IS NULL;
CREATE INDEX presences_orphaned ON presences (lease_until) WHERE instance_id IS NULL;
