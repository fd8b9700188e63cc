-- Every query of the broker, by name. Each starts with "-- name: <name>"; lib/broker/db.ts
-- loads them once at start, with the row type each returns, and refuses to start if one the
-- code names is missing or one here is named by no code. Hot paths are batched: one
-- statement for many sends, acks or recipients.

-- name: members_for_hello
-- the hellos that arrived together ($1 meshes, $2 member keys, by position n): who each one
-- is, and how many live connections other instances than $3 hold in its mesh and for it
-- (capacity holds across instances; this instance counts its own sockets itself)
SELECT i.n::int AS n, m.id, m.name, m.role, m.left_at IS NOT NULL AS left, m.banned_at IS NOT NULL AS banned, s.name AS mesh_name,
       (SELECT count(*)::int FROM presences p WHERE p.mesh_id = i.mesh_id AND p.key <> i.key AND p.disconnected_at IS NULL AND p.instance_id <> $3) AS elsewhere,
       (SELECT count(*)::int FROM presences p WHERE p.mesh_id = i.mesh_id AND p.key <> i.key AND p.member_id = m.id AND p.disconnected_at IS NULL AND p.instance_id <> $3) AS member_elsewhere
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS i(mesh_id, key, n)
JOIN members m ON m.mesh_id = i.mesh_id AND m.key = i.key
JOIN meshes s ON s.id = m.mesh_id;

-- name: names_in_use
-- of the names asked for ($1 meshes, $2 names, $3 the asking member keys, by position n): those
-- another current member holds, as its own or for one of its sessions
SELECT i.n::int AS n FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS i(mesh_id, name, key, n)
WHERE EXISTS (SELECT 1 FROM members m WHERE m.mesh_id = i.mesh_id AND m.name = i.name AND m.key <> i.key AND m.left_at IS NULL AND m.banned_at IS NULL)
   OR EXISTS (SELECT 1 FROM presences p JOIN members m ON m.id = p.member_id
              WHERE p.mesh_id = i.mesh_id AND p.name = i.name AND m.key <> i.key AND m.left_at IS NULL AND m.banned_at IS NULL);

-- name: presence_connect
-- The proven hellos that arrived together, one row each (no key twice). A key that was
-- online a moment ago — held here in its lease ($7), or by another instance connected or
-- inside its lease (a rolling restart, a balancer's choice) — reattaches: it keeps its status
-- and nobody is told. Only a fresh connect starts idle and is announced (`fresh`). A key
-- still connected on another instance is taken from it (`connected_elsewhere`: that instance
-- closes its socket). $6: each one's groups as a JSON array, or null to keep its groups.
WITH input AS (
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[])
    AS i(mesh_id, member_id, key, kind, name, groups, here)
), prior AS (
  SELECT p.mesh_id, p.key, p.disconnected_at IS NULL OR p.lease_until > now() AS online,
         CASE WHEN p.disconnected_at IS NULL AND p.instance_id <> $8 THEN p.instance_id END AS connected_elsewhere
  FROM presences p JOIN input i ON i.mesh_id = p.mesh_id AND i.key = p.key
), written AS (
  INSERT INTO presences AS p (mesh_id, member_id, key, kind, name, instance_id, groups)
  SELECT mesh_id, member_id, key, kind, name, $8, COALESCE(ARRAY(SELECT jsonb_array_elements_text(groups::jsonb)), '{}') FROM input
  ON CONFLICT (mesh_id, key) DO UPDATE SET
    member_id = EXCLUDED.member_id, kind = EXCLUDED.kind, name = EXCLUDED.name, instance_id = EXCLUDED.instance_id,
    groups = CASE WHEN (SELECT i.groups IS NULL FROM input i WHERE i.mesh_id = p.mesh_id AND i.key = p.key) THEN p.groups ELSE EXCLUDED.groups END,
    status = CASE WHEN p.disconnected_at IS NULL OR p.lease_until > now() OR (SELECT i.here FROM input i WHERE i.mesh_id = p.mesh_id AND i.key = p.key) THEN p.status ELSE 'idle' END,
    status_source = CASE WHEN p.disconnected_at IS NULL OR p.lease_until > now() OR (SELECT i.here FROM input i WHERE i.mesh_id = p.mesh_id AND i.key = p.key) THEN p.status_source ELSE 'inferred' END,
    status_at = CASE WHEN p.disconnected_at IS NULL OR p.lease_until > now() OR (SELECT i.here FROM input i WHERE i.mesh_id = p.mesh_id AND i.key = p.key) THEN p.status_at ELSE now() END,
    connected_at = CASE WHEN p.disconnected_at IS NULL OR p.lease_until > now() OR (SELECT i.here FROM input i WHERE i.mesh_id = p.mesh_id AND i.key = p.key) THEN p.connected_at ELSE now() END,
    disconnected_at = NULL, lease_until = NULL
  RETURNING p.mesh_id, p.key
)
SELECT w.mesh_id, w.key, NOT (i.here OR COALESCE(o.online, false)) AS fresh, o.connected_elsewhere
FROM written w JOIN input i ON i.mesh_id = w.mesh_id AND i.key = w.key
LEFT JOIN prior o ON o.mesh_id = w.mesh_id AND o.key = w.key;

-- name: presence_disconnect
UPDATE presences SET disconnected_at = now(), lease_until = now() + make_interval(secs => $4)
WHERE mesh_id = $1 AND key = $2 AND instance_id = $3 AND disconnected_at IS NULL;

-- name: presence_gone
-- the lease ran out (or, $4, the member was removed): offline from now on. A lease that
-- ran out does not touch a row a new connection has taken over meanwhile (here or on
-- another instance): no row, no `peer_left`.
UPDATE presences SET disconnected_at = COALESCE(disconnected_at, now()), lease_until = now()
WHERE mesh_id = $1 AND key = $2 AND instance_id = $3 AND (disconnected_at IS NOT NULL OR $4);

-- name: presence_orphan_instance
-- instance $1 stops (shutdown, a former life of it, or it died): its presences keep or start
-- a lease of $2 seconds with no instance behind it. A peer that reconnects anywhere inside
-- the lease takes its row over silently; presence_expire_orphans ends the others.
UPDATE presences SET instance_id = NULL, disconnected_at = COALESCE(disconnected_at, now()),
  lease_until = COALESCE(lease_until, now() + make_interval(secs => $2))
WHERE instance_id = $1 AND (disconnected_at IS NULL OR lease_until > now());

-- name: presence_expire_orphans
-- leases with no instance behind them that ran out: instance $1 takes each (row locks make
-- that exactly one instance) and tells `peer_left` for the current members among them
UPDATE presences p SET instance_id = $1
FROM members m
WHERE p.instance_id IS NULL AND p.lease_until <= now() AND m.id = p.member_id
RETURNING p.mesh_id, p.key, p.name, p.kind, m.key AS member_key, m.role, (m.left_at IS NULL AND m.banned_at IS NULL) AS current;

-- name: roster_members
SELECT id, key, name, role FROM members
WHERE mesh_id = $1 AND left_at IS NULL AND banned_at IS NULL ORDER BY id;

-- name: roster_presences
-- every proven key of the mesh seen within $2 seconds; `online` while connected or inside
-- the lease after a close. No join: lib/broker/presence.ts keeps those of current members
-- (roster_members) in memory. A join here was planned from the statistics of the moment,
-- and a mesh whose presences grew from nothing in a connect storm looked like one row: the
-- plan then scanned every current member once per presence (130,000 rows for 500 peers,
-- 150 ms a load; docs/benchmarks.md, round six).
SELECT p.key, p.kind, p.member_id, p.name, p.status, p.status_source, p.summary, p.groups, p.connected_at,
       (p.disconnected_at IS NULL OR p.lease_until > now()) AS online
FROM presences p
WHERE p.mesh_id = $1 AND (p.disconnected_at IS NULL OR p.disconnected_at > now() - make_interval(secs => $2))
ORDER BY p.connected_at, p.id;

-- name: set_status
-- hook > manual > inferred; a higher source stays authoritative while fresh
-- ($5 seconds); dnd is set and cleared only manually. Returns a row only when applied.
UPDATE presences SET status = $3, status_source = $4, status_at = now()
WHERE mesh_id = $1 AND key = $2
  AND ($3 <> 'dnd' OR $4 = 'manual')
  AND (status <> 'dnd' OR $4 = 'manual')
  AND (
    ($4 = 'manual' AND ($3 = 'dnd' OR status = 'dnd'))
    OR array_position(ARRAY['inferred', 'manual', 'hook'], $4::text) >= array_position(ARRAY['inferred', 'manual', 'hook'], status_source)
    OR status_at < now() - make_interval(secs => $5)
  )
RETURNING status;

-- name: status_ttl_sweep
UPDATE presences SET status = 'idle', status_source = 'inferred', status_at = now()
WHERE status = 'working' AND status_at < now() - make_interval(secs => $1)
RETURNING mesh_id, key;

-- name: set_summary
UPDATE presences SET summary = $3 WHERE mesh_id = $1 AND key = $2;

-- name: join_group
UPDATE presences SET groups = array_append(array_remove(groups, $3::text), $3::text)
WHERE mesh_id = $1 AND key = $2 AND (cardinality(groups) < $4 OR $3 = ANY(groups))
RETURNING groups;

-- name: leave_group
UPDATE presences SET groups = array_remove(groups, $3::text) WHERE mesh_id = $1 AND key = $2 RETURNING groups;

-- name: insert_deliveries
-- One row per recipient, each column an array with one element per row ($14 marks each
-- message's first row; nonce and ciphertext in the sender's base64). No join: at a steady
-- rate a batch is two or three rows, and building a hash join for them cost more than the
-- rows. A row that meets a stored one on either unique index (a retry) is skipped; RETURNING
-- names the rows written, and lib/broker/send.ts decides per message. When $19 is not empty
-- it is signalled on channel $18 (lib/broker/hub.ts) in the same statement, so a batch that
-- needs nothing else commits in one round trip; the signal's row has a null message id.
WITH written AS (
  INSERT INTO deliveries (message_id, mesh_id, sender_key, sender_member_key, client_message_id, fingerprint, target, priority, hops,
                          recipient_key, nonce, ciphertext, first_row, expires_at, claimed_until, claimed_by, pushes)
  SELECT r.id, r.mesh_id, r.sender, r.member_key, r.cmid, r.fingerprint, r.target, r.priority, r.hops,
         r.recipient, decode(r.nonce, 'base64'), decode(r.ciphertext, 'base64'), r.first_row, now() + make_interval(secs => $15),
         CASE WHEN r.claimed THEN now() + make_interval(secs => $16) END,
         CASE WHEN r.claimed THEN $17 END,
         CASE WHEN r.claimed THEN 1 ELSE 0 END
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::smallint[],
              $10::text[], $11::text[], $12::text[], $13::bool[], $14::bool[])
    AS r(id, mesh_id, sender, member_key, cmid, fingerprint, target, priority, hops, recipient, nonce, ciphertext, claimed, first_row)
  ON CONFLICT DO NOTHING
  RETURNING message_id, recipient_key, queued_at
), signalled AS (
  SELECT pg_notify($18, $19) WHERE $19 <> ''
)
SELECT message_id, recipient_key, queued_at FROM written
UNION ALL
SELECT NULL, NULL, NULL FROM signalled;

-- name: delete_deliveries
-- ($1 message ids, $2 slots, pairwise) rows a conflicting retry wrote, taken out again by
-- their key: one may name the recipient of the stored first row (sql/008_one_unique_index.sql)
DELETE FROM deliveries d
USING unnest($1::uuid[], $2::text[]) AS k(message_id, slot)
WHERE d.message_id = k.message_id AND d.slot = k.slot;

-- name: legacy_rows
SELECT EXISTS (SELECT 1 FROM deliveries WHERE legacy) AS found;

-- name: existing_messages
-- what is stored under these message ids ($1), or, for rows from before migration 005,
-- under these (mesh, sender key, client message id) ($2, $3, $4)
SELECT message_id AS id, mesh_id, sender_key, client_message_id, fingerprint, count(*)::int AS recipients
FROM deliveries WHERE message_id = ANY($1::uuid[])
GROUP BY message_id, mesh_id, sender_key, client_message_id, fingerprint
UNION ALL
SELECT l.message_id, l.mesh_id, l.sender_key, l.client_message_id, l.fingerprint, count(*)::int
FROM deliveries l JOIN unnest($2::text[], $3::text[], $4::text[]) AS k(mesh_id, sender, cmid)
  ON l.legacy AND l.mesh_id = k.mesh_id AND l.sender_key = k.sender AND l.client_message_id = k.cmid
GROUP BY l.message_id, l.mesh_id, l.sender_key, l.client_message_id, l.fingerprint;

-- name: claim_queued
-- Claim the oldest deliverable rows of one recipient ($3: may it take held priorities).
-- SKIP LOCKED: two claims running at once take disjoint rows, so nothing is pushed twice.
WITH pick AS (
  SELECT message_id FROM deliveries
  WHERE mesh_id = $1 AND recipient_key = $2 AND state = 'queued'
    AND (claimed_until IS NULL OR claimed_until < now()) AND expires_at > now()
    AND ($3 OR priority = 'now')
  ORDER BY id LIMIT $4
  FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d SET claimed_until = now() + make_interval(secs => $5), claimed_by = $6, pushes = d.pushes + 1
FROM pick
WHERE d.message_id = pick.message_id AND d.slot = ANY (ARRAY['', $2]) AND d.recipient_key = $2
RETURNING d.id, d.message_id, d.priority, d.nonce, d.ciphertext, d.sender_key, d.sender_member_key,
          d.queued_at AS created_at, d.client_message_id, d.hops, d.target;

-- name: keys_with_queued
-- of the keys that just connected ($1 meshes, $2 keys): those with something to catch up on
SELECT DISTINCT i.mesh_id, i.key
FROM unnest($1::text[], $2::text[]) AS i(mesh_id, key)
WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.mesh_id = i.mesh_id AND d.recipient_key = i.key AND d.state = 'queued');

-- name: release_claims
UPDATE deliveries SET claimed_until = NULL
WHERE mesh_id = $1 AND recipient_key = $2 AND state = 'queued' AND claimed_by = $3 AND claimed_until IS NOT NULL;

-- name: ack_deliveries
-- ($1 message ids, $2 recipient keys, pairwise.) Only the key and the recipient are in WHERE:
-- the slot as ANY (ARRAY[…]), two probes of the index (as IN, it became an OR filter over
-- every row of a wide message). Whether the row is still queued is decided in SET: a filter
-- on the state was estimated from statistics that lag a burst (after a warm-up every row
-- looked delivered), and the planner then scanned the whole table once per acknowledged row.
UPDATE deliveries d SET
  state = CASE WHEN d.state = 'queued' THEN 'delivered' ELSE d.state END,
  delivered_at = CASE WHEN d.state = 'queued' THEN now() ELSE d.delivered_at END,
  claimed_until = CASE WHEN d.state = 'queued' THEN NULL ELSE d.claimed_until END
FROM unnest($1::uuid[], $2::text[]) AS a(message_id, recipient)
WHERE d.message_id = a.message_id AND d.slot = ANY (ARRAY['', a.recipient]) AND d.recipient_key = a.recipient;

-- name: commit_without_flush
-- this transaction's COMMIT returns before its WAL reaches the disk (acks only: a lost one
-- means a push made again; a send's ack always waits for its commit)
SELECT set_config('synchronous_commit', 'off', true);

-- name: mark_deliveries
-- states only move forward: queued < delivered < surfaced < read (expired is final)
UPDATE deliveries SET state = $4,
  delivered_at = COALESCE(delivered_at, now()),
  surfaced_at = COALESCE(surfaced_at, now()),
  read_at = CASE WHEN $4 = 'read' THEN now() ELSE read_at END,
  claimed_until = NULL
WHERE message_id = ANY($1::uuid[]) AND slot = ANY (ARRAY['', $2]) AND recipient_key = $2 AND mesh_id = $3
  AND array_position(ARRAY['queued', 'delivered', 'surfaced', 'read'], state) < array_position(ARRAY['queued', 'delivered', 'surfaced', 'read'], $4::text);

-- name: message_status
SELECT message_id AS id, target, priority, queued_at AS created_at, expires_at, client_message_id,
       recipient_key, state, queued_at, delivered_at, surfaced_at, read_at, expired_at, pushes
FROM deliveries
WHERE message_id = $1 AND mesh_id = $2 AND sender_member_key = $3
ORDER BY id;

-- name: pending_recipients
-- redelivery tick: which of these live keys have rows they could take now, and whether any
-- is `now` (held priorities go only to an idle recipient; lib/broker/delivery.ts decides)
SELECT d.mesh_id, d.recipient_key, bool_or(d.priority = 'now') AS urgent
FROM deliveries d
JOIN unnest($1::text[], $2::text[]) AS k(mesh_id, key)
  ON d.mesh_id = k.mesh_id AND d.recipient_key = k.key
WHERE d.state = 'queued' AND (d.claimed_until IS NULL OR d.claimed_until < now()) AND d.expires_at > now()
GROUP BY d.mesh_id, d.recipient_key;

-- name: expire_deliveries
-- by the primary key: `id` has no index, and a join on it read the whole table each sweep
WITH due AS (
  SELECT message_id, slot FROM deliveries WHERE state = 'queued' AND expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d SET state = 'expired', expired_at = now(), claimed_until = NULL FROM due WHERE d.message_id = due.message_id AND d.slot = due.slot;

-- name: purge_messages
-- final rows long past their message's TTL ($1 seconds of age), at most $2 at a time
DELETE FROM deliveries
WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM deliveries WHERE queued_at < now() - make_interval(secs => $1) AND state <> 'queued' LIMIT $2
));

-- name: purge_presences
DELETE FROM presences WHERE disconnected_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.mesh_id = presences.mesh_id AND d.recipient_key = presences.key AND d.state = 'queued');

-- name: queue_depth
SELECT count(*)::bigint AS depth FROM deliveries WHERE state = 'queued';

-- ---- membership (lib/broker/membership.ts) ----------------------------------------------

-- name: current_member
SELECT m.id, m.name, m.role, m.key, s.name AS mesh_name, s.owner_key
FROM members m JOIN meshes s ON s.id = m.mesh_id
WHERE m.mesh_id = $1 AND m.key = $2 AND m.left_at IS NULL AND m.banned_at IS NULL;

-- name: mesh_insert
INSERT INTO meshes (id, name, owner_key, created_at) VALUES ($1, $2, $3, $4);

-- name: owner_insert
INSERT INTO members (mesh_id, key, name, role, joined_at) VALUES ($1, $2, $3, 'owner', $4);

-- name: invite_insert
INSERT INTO invites (id, mesh_id, role, expires_at, max_uses, created_by, signature, created_at)
VALUES ($1, $2, $3, to_timestamp($4), $5, $6, $7, $8)
ON CONFLICT (id) DO NOTHING;

-- name: invite_by_id
SELECT mesh_id, signature FROM invites WHERE id = $1;

-- name: invite_revoke
-- $4: the admin's member id (an admin revokes only its own invites), null for the owner
UPDATE invites SET revoked_at = COALESCE(revoked_at, $3)
WHERE id = $1 AND mesh_id = $2 AND ($4::bigint IS NULL OR created_by = $4)
RETURNING revoked_at;

-- name: mesh_lock
-- FOR NO KEY UPDATE serialises the joins of one mesh without blocking other writers'
-- foreign-key checks: "exactly one wins" and unique names hold without retry loops.
SELECT name, owner_key FROM meshes WHERE id = $1 FOR NO KEY UPDATE;

-- name: invite_lock
SELECT i.signature, i.role, i.expires_at, i.revoked_at, m.key AS inviter_key, m.role AS inviter_role,
       (m.left_at IS NULL AND m.banned_at IS NULL) AS inviter_current
FROM invites i JOIN members m ON m.id = i.created_by
WHERE i.id = $1 AND i.mesh_id = $2
FOR UPDATE OF i;

-- name: member_by_key
-- current, former or banned: every membership decision starts from this row
SELECT id, name, key, role, left_at, banned_at, invite_id FROM members WHERE mesh_id = $1 AND key = $2;

-- name: name_taken
SELECT 1 AS taken FROM members
WHERE mesh_id = $1 AND name = $2 AND key <> $3 AND left_at IS NULL AND banned_at IS NULL
LIMIT 1;

-- name: invite_use
UPDATE invites SET uses = uses + 1 WHERE id = $1 AND uses < max_uses RETURNING uses;

-- name: member_insert
INSERT INTO members (mesh_id, key, name, role, invite_id, joined_at) VALUES ($1, $2, $3, $4, $5, $6);

-- name: member_readmit
UPDATE members SET name = $2, role = $3, invite_id = $4, joined_at = $5, left_at = NULL WHERE id = $1;

-- name: members_current
SELECT name, key, role, joined_at FROM members
WHERE mesh_id = $1 AND left_at IS NULL AND banned_at IS NULL
ORDER BY joined_at, id;

-- name: member_leave
-- leave and kick alike: out now, back only with a new invite
UPDATE members SET left_at = $2 WHERE id = $1 AND left_at IS NULL AND banned_at IS NULL;

-- name: member_ban
UPDATE members SET banned_at = $2, banned_by = $3 WHERE id = $1 AND banned_at IS NULL;

-- name: member_unban
-- allowed back, not let back in: an unbanned key still needs an invite
UPDATE members SET banned_at = NULL, banned_by = NULL, left_at = COALESCE(left_at, $2)
WHERE id = $1 AND banned_at IS NOT NULL;

-- name: bans
SELECT m.name, m.key, m.role, m.banned_at, b.name AS banned_by_name
FROM members m LEFT JOIN members b ON b.id = m.banned_by
WHERE m.mesh_id = $1 AND m.banned_at IS NOT NULL
ORDER BY m.banned_at, m.id;

-- ---- shared between instances (lib/broker/http.ts, broker.ts) -----------------------------

-- name: replay_first_use
-- a row only the first time a signature is seen; expired records are trimmed as we go
WITH trimmed AS (
  DELETE FROM replays WHERE signature IN (SELECT signature FROM replays WHERE expires_at < now() LIMIT 100)
)
INSERT INTO replays (signature, expires_at) VALUES ($1, to_timestamp($2 / 1000.0))
ON CONFLICT (signature) DO NOTHING
RETURNING 1 AS first;

-- name: instance_beat
INSERT INTO instances (id) VALUES ($1)
ON CONFLICT (id) DO UPDATE SET seen_at = now();

-- name: release_instance_claims
-- at start: claims this instance id held in a former life (it was killed) go back at once
UPDATE deliveries SET claimed_until = NULL WHERE state = 'queued' AND claimed_by = $1 AND claimed_until IS NOT NULL;

-- name: instance_gone
DELETE FROM instances WHERE id = $1;

-- name: reap_instances
-- instances silent for $1 seconds are dead: release their claims; their presences start a
-- lease of $3 seconds with no instance behind it (as presence_orphan_instance)
WITH dead AS (
  DELETE FROM instances WHERE seen_at < now() - make_interval(secs => $1) AND id <> $2 RETURNING id
), released AS (
  UPDATE deliveries SET claimed_until = NULL
  WHERE state = 'queued' AND claimed_until IS NOT NULL AND claimed_by IN (SELECT id FROM dead)
  RETURNING 1
), orphaned AS (
  UPDATE presences SET instance_id = NULL, disconnected_at = COALESCE(disconnected_at, now()),
    lease_until = COALESCE(lease_until, now() + make_interval(secs => $3))
  WHERE instance_id IN (SELECT id FROM dead) AND (disconnected_at IS NULL OR lease_until > now())
  RETURNING 1
)
SELECT (SELECT count(*)::int FROM dead) AS instances, (SELECT count(*)::int FROM released) AS claims,
       (SELECT count(*)::int FROM orphaned) AS presences;

-- name: notify
-- a signal to every instance (lib/broker/hub.ts listens); sent inside a transaction, it
-- leaves only at COMMIT
SELECT pg_notify($1, $2);

-- name: analyze_deliveries
-- fresh statistics for the planner, and with them new plans in every session (lib/broker/send.ts)
ANALYZE deliveries;
