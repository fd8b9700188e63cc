// The one place where claudemesh errors get their stable codes. Every code is listed in
// docs/errors.md (a test keeps the two in step). Messages say what happened and the value
// received; the hint says what to do. Nobody branches on message text, only on `code`.

/** code → default hint and the HTTP status used when the error answers a request */
export const ERROR_CODES = {
  CM_ERR_CONFIG_INVALID: { status: 500, hint: 'fix the listed environment variables and start again' },
  CM_ERR_EMBEDDED_PG_START: { status: 500, hint: 'set DATABASE_URL to use your own Postgres, or free the data dir and port' },
  // starting the broker process (each stops the start with one line; see docs/errors.md)
  CM_ERR_DATA_DIR_IN_USE: { status: 500, hint: 'stop the broker that uses it, or give this one its own BROKER_DATA_DIR and EMBEDDED_PG_PORT' },
  CM_ERR_PORT_IN_USE: { status: 500, hint: 'stop what listens there, or choose a free port' },
  CM_ERR_LISTEN_FAILED: { status: 500, hint: 'set BROKER_HOST to an address of this machine (127.0.0.1, or 0.0.0.0 for all) and BROKER_PORT to a port this user may bind' },
  CM_ERR_DB_REJECTED: { status: 500, hint: 'fix DATABASE_URL (user, password, database name) or the database (role, pg_hba.conf), then start again' },
  CM_ERR_MIGRATION_CHECKSUM: { status: 500, hint: 'never edit an applied migration: restore the file and add a new numbered migration instead' },
  CM_ERR_MIGRATION_NAME: { status: 500, hint: 'name migrations NNN_description.sql with unique increasing numbers' },
  CM_ERR_QUERY_MISSING: { status: 500, hint: 'restore sql/queries/broker.sql from the release: every query the code names must be there, and nothing else' },
  CM_ERR_MIGRATION_FAILED: { status: 500, hint: 'read the Postgres error, fix the SQL or the database, then start again' },
  CM_ERR_BAD_JSON: { status: 400, hint: 'send one JSON object as the request body' },
  CM_ERR_BAD_REQUEST: { status: 400, hint: 'check the request fields against docs/protocol.md' },
  CM_ERR_UNAUTHORIZED: { status: 401, hint: 'sign the request with your key (the CLI and daemon do this for you)' },
  CM_ERR_TIMESTAMP_SKEW: { status: 401, hint: "fix this machine's clock (NTP): it must be within 60 s of the broker's" },
  CM_ERR_BAD_SIGNATURE: { status: 401, hint: 'the signature does not match the key: check that the right identity signs, and that nothing rewrote the request' },
  CM_ERR_REPLAYED: { status: 401, hint: 'sign every request afresh; a signature is good for one use' },
  CM_ERR_FORBIDDEN: { status: 403, hint: 'only an owner or admin of the mesh may do this' },
  // membership (invites, joins, moderation)
  CM_ERR_INVITE_MALFORMED: { status: 400, hint: 'copy the whole invite token: one line that starts with cm1.' },
  CM_ERR_INVITE_BAD_SIGNATURE: { status: 400, hint: 'the invite was altered or is not signed by an owner or admin of the mesh: ask for a fresh invite' },
  CM_ERR_INVITE_UNKNOWN: { status: 404, hint: 'this broker has no such invite: ask the inviter for a fresh one (claudemesh invite), made for this broker' },
  CM_ERR_INVITE_EXPIRED: { status: 410, hint: 'ask an owner or admin for a fresh invite (claudemesh invite --expires 7d)' },
  CM_ERR_INVITE_EXHAUSTED: { status: 410, hint: 'every use of this invite is taken: ask for a fresh invite (claudemesh invite --uses N)' },
  CM_ERR_INVITE_REVOKED: { status: 410, hint: 'the invite was revoked, or whoever signed it is no longer an owner or admin: ask for a fresh invite' },
  CM_ERR_INVITE_WRONG_BROKER: { status: 400, hint: 'the invite names another broker address than the one that received it: use an invite made for this broker, or forward the Host header through your proxy' },
  CM_ERR_NAME_TAKEN: { status: 409, hint: 'pick another name with --name' },
  // the claudemesh CLI (never sent by the broker)
  CM_ERR_USAGE: { status: 400, hint: 'see claudemesh <verb> --help' },
  CM_ERR_BROKER_UNREACHABLE: { status: 502, hint: 'check the broker URL and that the broker runs (GET /health answers 200)' },
  CM_ERR_CLIENT_CONFIG: { status: 500, hint: 'fix or move away the claudemesh config file (CLAUDEMESH_HOME, default ~/.claudemesh/config.json)' },
  CM_ERR_MESH_UNKNOWN: { status: 404, hint: 'see your meshes with claudemesh list, and pick one with --mesh NAME' },
  CM_ERR_MESH_EXISTS: { status: 409, hint: 'pick another name, or leave the other mesh first (claudemesh leave NAME)' },
  CM_ERR_AMBIGUOUS: { status: 400, hint: 'use the full name, the mesh id or a longer key prefix' },
  CM_ERR_PEER_UNKNOWN: { status: 404, hint: 'name a current member by its name or a unique key prefix' },
  CM_ERR_NOT_FOUND: { status: 404, hint: 'see docs/protocol.md for the routes this broker serves' },
  CM_ERR_METHOD_NOT_ALLOWED: { status: 405, hint: 'use the method listed for this route in docs/protocol.md' },
  CM_ERR_PAYLOAD_TOO_LARGE: { status: 413, hint: 'send a smaller body (limit MAX_MESSAGE_BYTES)' },
  CM_ERR_RATE_LIMITED: { status: 429, hint: 'slow down and retry after the delay given' },
  CM_ERR_NOT_IMPLEMENTED: { status: 501, hint: 'this broker version does not offer this yet' },
  CM_ERR_DB_UNAVAILABLE: { status: 503, hint: 'the database is unreachable; the broker retries by itself' },
  CM_ERR_BAD_FRAME: { status: 400, hint: 'send one JSON object per frame with the fields listed in docs/protocol.md' },
  CM_ERR_UNKNOWN_TYPE: { status: 400, hint: 'use a frame type listed in docs/protocol.md' },
  CM_ERR_PROTOCOL_VERSION: { status: 426, hint: 'upgrade claudemesh on this machine: this broker speaks a newer protocol (npm install -g claudemesh, or git pull in your clone)' },
  CM_ERR_NO_HELLO: { status: 401, hint: 'send hello or session_hello first' },
  CM_ERR_DUPLICATE_HELLO: { status: 400, hint: 'a connection says hello once; open a new connection for another identity' },
  CM_ERR_HELLO_TIMEOUT: { status: 408, hint: 'send hello within 10 s of connecting' },
  CM_ERR_CAPACITY: { status: 503, hint: 'the mesh has MAX_CONNECTIONS_PER_MESH live connections: close one or ask the operator to raise the limit' },
  CM_ERR_EXPIRED: { status: 401, hint: 'mint a fresh session attestation (expiry in the future, at most 24 h ahead) for every connect' },
  CM_ERR_BANNED: { status: 403, hint: 'this member is banned from the mesh; an owner or admin can unban it' },
  CM_ERR_UNKNOWN_RECIPIENT: { status: 404, hint: 'refresh the roster (list_peers) and address a key that is in this mesh' },
  CM_ERR_ENVELOPES_MISMATCH: { status: 400, hint: 'refresh the roster (list_peers) and encrypt one envelope for each recipient key the message lists as missing' },
  CM_ERR_IDEMPOTENCY_CONFLICT: { status: 409, hint: 'a client message id names one request: use a new id for a different message' },
  CM_ERR_LOOP_GUARD: { status: 429, hint: 'two peers are messaging each other too fast, probably in a loop: stop replying automatically' },
  // the daemon (IPC answers and the CLI verbs that use it)
  CM_ERR_DAEMON_NOT_RUNNING: { status: 503, hint: 'start it with claudemesh daemon up (verbs that need it try to start it for you)' },
  CM_ERR_DAEMON_RUNNING: { status: 409, hint: 'a daemon already runs for this user: claudemesh daemon status shows it, claudemesh daemon down stops it' },
  CM_ERR_SESSION_LIMIT: { status: 503, hint: 'unregister sessions that have ended (GET /v1/sessions lists them, POST /v1/sessions/unregister ends one); a session registered with its pid goes by itself once that process exits' },
  CM_ERR_OUTBOX_CONFLICT: { status: 409, hint: 'a client message id names one message: use a new id (or none) for a different message' },
  CM_ERR_DAEMON_STORAGE: { status: 507, hint: 'free space on the disk that holds the claudemesh home (CLAUDEMESH_HOME, default ~/.claudemesh), or make it writable again' },
  CM_ERR_DAEMON_DB_VERSION: { status: 500, hint: 'a newer claudemesh wrote this daemon database: run that version, or move the file away to start an empty one' },
  CM_ERR_MESH_OFFLINE: { status: 503, hint: 'the daemon has never reached this mesh\'s broker, so it knows nobody there yet: check the broker (claudemesh doctor), then retry' },
  CM_ERR_REMOVED: { status: 403, hint: 'you are no longer a member of this mesh (kicked, or you left): ask an owner or admin for a new invite, then claudemesh join it' },
  CM_ERR_INVALID_KEY: { status: 400, hint: 'use a peer name, or a key copied whole from claudemesh peer list --json' },
  CM_ERR_OUTCOME_UNKNOWN: { status: 503, hint: 'the request reached the daemon but its answer did not come back: claudemesh msg status <id> tells whether it was queued; sending again with --id <id> never duplicates it' },
  // the Claude Code integration (install, launch)
  CM_ERR_CLAUDE_MISSING: { status: 500, hint: 'install Claude Code first (npm install -g @anthropic-ai/claude-code), or set CLAUDEMESH_CLAUDE_BIN to its path' },
  CM_ERR_CLAUDE_FAILED: { status: 500, hint: 'run the claude command shown yourself to see why; claudemesh doctor checks the setup' },
  CM_ERR_CLAUDE_FILE: { status: 500, hint: 'fix the JSON of that file (Claude Code keeps backups in ~/.claude/backups), then run the command again' },
  CM_ERR_INTERNAL: { status: 500, hint: 'this is a bug: report it with the broker log line of the same time' },
} as const satisfies Record<string, { status: number; hint: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

interface ErrorOptions {
  hint?: string;
  /** structured facts about the failure (e.g. the value received); never secrets */
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class CmError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CmError';
    this.code = code;
    this.hint = options.hint ?? ERROR_CODES[code].hint;
    this.status = ERROR_CODES[code].status;
    this.details = options.details;
  }

  /** The shape used on the wire (HTTP bodies, WS error frames) and by `--json` output. */
  toJSON(): { code: ErrorCode; message: string; hint: string; details?: Record<string, unknown> } {
    const body: { code: ErrorCode; message: string; hint: string; details?: Record<string, unknown> } = {
      code: this.code,
      message: this.message,
      hint: this.hint,
    };
    if (this.details !== undefined) body.details = this.details;
    return body;
  }
}

/** The factory: the only way this codebase makes an error with a code. */
export function cmError(code: ErrorCode, message: string, options: ErrorOptions = {}): CmError {
  const error = new CmError(code, message, options);
  // Trim the factory frame so the stack starts where the error was raised.
  Error.captureStackTrace(error, cmError);
  return error;
}

export function isCmError(value: unknown): value is CmError {
  return value instanceof CmError;
}

/**
 * An error answered by the broker (or passed through by the daemon): its code may be one
 * this client version does not know, so it is kept as a string rather than an ErrorCode.
 * Here, not in broker-client.ts, so that whoever only reports it (the CLI's error output,
 * the daemon client) does not load the request signing and its libsodium.
 */
export class BrokerRefusal extends Error {
  readonly code: string;
  readonly hint: string;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(body: { code: string; message: string; hint: string; details?: Record<string, unknown> }, status: number) {
    super(body.message);
    this.name = 'BrokerRefusal';
    this.code = body.code;
    this.hint = body.hint;
    this.status = status;
    this.details = body.details;
  }
}
