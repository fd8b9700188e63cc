-- 003_shared_state: what several broker instances on one database must share.
-- Replays: every signed HTTP request's signature, kept until its timestamp leaves the clock
-- window, so a captured request is refused after a restart and by any other instance.
CREATE TABLE replays (
  signature  text PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
CREATE INDEX replays_expiry ON replays (expires_at);

-- Instances: each running broker, with a heartbeat. An instance whose heartbeat stopped
-- (killed, machine gone) is dead: its claims are released and its presences end at once
-- instead of waiting for timeouts.
CREATE TABLE instances (
  id          text PRIMARY KEY,
  started_at  timestamptz NOT NULL DEFAULT now(),
  seen_at     timestamptz NOT NULL DEFAULT now()
);
