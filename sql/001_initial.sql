-- 001_initial: the broker's whole initial schema.
-- Keys are lowercase hex ed25519 public keys (64 chars). The broker stores public keys and
-- ciphertext only: nothing here can impersonate a member or read a message.

CREATE TABLE meshes (
  id           text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{8,64}$'),
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
  owner_pubkey text NOT NULL CHECK (owner_pubkey ~ '^[0-9a-f]{64}$'),
  created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE members (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  mesh_id     text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
  pubkey      text NOT NULL CHECK (pubkey ~ '^[0-9a-f]{64}$'),
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
  role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  invite_id   text,
  joined_at   timestamptz NOT NULL DEFAULT now(),
  left_at     timestamptz,
  -- a ban: set while revoked, cleared by unban; hellos of a revoked member fail
  revoked_at  timestamptz,
  revoked_by  bigint REFERENCES members (id) ON DELETE SET NULL,
  UNIQUE (mesh_id, pubkey)
);
-- roster and broadcast fan-out read the current members of one mesh
CREATE INDEX members_mesh_current ON members (mesh_id) WHERE left_at IS NULL AND revoked_at IS NULL;

CREATE TABLE invites (
  id          text PRIMARY KEY CHECK (length(id) BETWEEN 16 AND 128), -- the signed nonce
  mesh_id     text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
  role        text NOT NULL CHECK (role IN ('admin', 'member')),
  expires_at  timestamptz NOT NULL,
  max_uses    integer NOT NULL CHECK (max_uses >= 1),
  uses        integer NOT NULL DEFAULT 0,
  created_by  bigint NOT NULL REFERENCES members (id) ON DELETE CASCADE,
  signature   text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz,
  CHECK (uses BETWEEN 0 AND max_uses)
);
CREATE INDEX invites_mesh ON invites (mesh_id);

-- One row per routing key ever proven in a mesh: a member's control-plane connection
-- (role 'control', pubkey = member key) or a Claude session (role 'session', pubkey =
-- session key). The row outlives the socket so offline keys stay routable; a socket that
-- closed keeps the presence until lease_until (silent reattach within the lease).
CREATE TABLE presences (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  mesh_id          text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
  member_id        bigint NOT NULL REFERENCES members (id) ON DELETE CASCADE,
  pubkey           text NOT NULL CHECK (pubkey ~ '^[0-9a-f]{64}$'),
  role             text NOT NULL CHECK (role IN ('control', 'session')),
  name             text NOT NULL DEFAULT '',
  instance_id      text,
  status           text NOT NULL DEFAULT 'idle' CHECK (status IN ('idle', 'working', 'dnd')),
  status_source    text NOT NULL DEFAULT 'inferred' CHECK (status_source IN ('hook', 'manual', 'inferred')),
  status_at        timestamptz NOT NULL DEFAULT now(),
  summary          text NOT NULL DEFAULT '',
  groups           text[] NOT NULL DEFAULT '{}',
  connected_at     timestamptz NOT NULL DEFAULT now(),
  disconnected_at  timestamptz,
  lease_until      timestamptz,
  UNIQUE (mesh_id, pubkey)
);
-- live roster of a mesh (list_peers, capacity) and of an instance (shutdown marking)
CREATE INDEX presences_mesh_live ON presences (mesh_id) WHERE disconnected_at IS NULL;
CREATE INDEX presences_instance_live ON presences (instance_id) WHERE disconnected_at IS NULL;
-- the status TTL sweep looks only at sessions still working
CREATE INDEX presences_working ON presences (status_at) WHERE status = 'working';
CREATE INDEX presences_groups ON presences USING gin (groups);

CREATE TABLE messages (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  mesh_id            text NOT NULL REFERENCES meshes (id) ON DELETE CASCADE,
  sender_member_id   bigint NOT NULL REFERENCES members (id) ON DELETE CASCADE,
  sender_pubkey      text NOT NULL,
  sender_member_key  text NOT NULL,
  client_message_id  text NOT NULL CHECK (length(client_message_id) BETWEEN 1 AND 128),
  -- hash of the request (targets, envelopes, priority): a retry with the same
  -- client_message_id but another fingerprint is an idempotency conflict
  fingerprint        text NOT NULL,
  target             text NOT NULL,
  priority           text NOT NULL CHECK (priority IN ('now', 'next', 'low')),
  hops               smallint NOT NULL DEFAULT 0,
  created_at         timestamptz NOT NULL DEFAULT now(),
  expires_at         timestamptz NOT NULL,
  UNIQUE (mesh_id, sender_pubkey, client_message_id)
);
CREATE INDEX messages_created ON messages (created_at);
-- message_status: the sender's view of its own messages
CREATE INDEX messages_sender_member ON messages (mesh_id, sender_member_key);

-- One row per recipient key: queued → delivered (client_ack) → surfaced → read, or expired.
CREATE TABLE deliveries (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id        uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
  mesh_id           text NOT NULL,
  recipient_pubkey  text NOT NULL,
  -- copied from the message: the drain filters held priorities without a join
  priority          text NOT NULL CHECK (priority IN ('now', 'next', 'low')),
  nonce             bytea NOT NULL,
  ciphertext        bytea NOT NULL,
  state             text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'delivered', 'surfaced', 'read', 'expired')),
  expires_at        timestamptz NOT NULL,
  lease_until       timestamptz,
  lease_instance    text,
  pushes            integer NOT NULL DEFAULT 0,
  queued_at         timestamptz NOT NULL DEFAULT now(),
  delivered_at      timestamptz,
  surfaced_at       timestamptz,
  read_at           timestamptz,
  expired_at        timestamptz,
  UNIQUE (message_id, recipient_pubkey)
);
-- the drain: oldest queued rows of one recipient
CREATE INDEX deliveries_queued ON deliveries (mesh_id, recipient_pubkey, id) WHERE state = 'queued';
-- the expiry sweep and the redelivery tick over expired leases
CREATE INDEX deliveries_queued_expiry ON deliveries (expires_at) WHERE state = 'queued';
CREATE INDEX deliveries_queued_lease ON deliveries (lease_until) WHERE state = 'queued' AND lease_until IS NOT NULL;
