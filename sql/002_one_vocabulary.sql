-- 002_one_vocabulary: one word per thing (docs/architecture.md, glossary).
-- A public key is a "key" (columns *_key); a member is "banned", not "revoked" (invites
-- keep "revoked"); a connection's kind is 'member' or 'session' (it was called a role,
-- which is the owner/admin/member rank only); the 30 s hold an instance puts on a pushed
-- delivery is a "claim" (a "lease" is only the 90 s hold a closed connection keeps).

ALTER TABLE meshes RENAME COLUMN owner_pubkey TO owner_key;

ALTER TABLE members RENAME COLUMN pubkey TO key;
ALTER TABLE members RENAME COLUMN revoked_at TO banned_at;
ALTER TABLE members RENAME COLUMN revoked_by TO banned_by;
ALTER INDEX members_mesh_current RENAME TO members_current;

ALTER TABLE presences RENAME COLUMN pubkey TO key;
ALTER TABLE presences RENAME COLUMN role TO kind;
ALTER TABLE presences DROP CONSTRAINT presences_role_check;
UPDATE presences SET kind = 'member' WHERE kind = 'control';
ALTER TABLE presences ADD CONSTRAINT presences_kind_check CHECK (kind IN ('member', 'session'));

ALTER TABLE messages RENAME COLUMN sender_pubkey TO sender_key;

ALTER TABLE deliveries RENAME COLUMN recipient_pubkey TO recipient_key;
ALTER TABLE deliveries RENAME COLUMN lease_until TO claimed_until;
ALTER TABLE deliveries RENAME COLUMN lease_instance TO claimed_by;
ALTER INDEX deliveries_queued_lease RENAME TO deliveries_queued_claim;
