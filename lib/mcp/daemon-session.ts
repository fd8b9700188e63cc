// The MCP server's way to the daemon, as its Claude session. Under `claudemesh launch` the
// session is registered already and CLAUDEMESH_SESSION_TOKEN_FILE names its token; otherwise
// (the plugin, or `claude` started by hand with the server installed) the server registers
// the session itself, keyed by the Claude session id Claude Code gives it, with the Claude
// process's pid so the daemon lets the session go when Claude exits.
//
// Nothing here exits or throws past its caller: a daemon that is down, starting or restarted
// is retried by whoever asks next (an exited stdio server is never restarted by the client).

import { ensureDaemonReady } from '../../daemon/autostart.ts';
import { daemonPaths } from '../../daemon/paths.ts';
import { callDaemon, SESSION_TOKEN_FILE_ENV, sessionHeader, sessionTokenFrom } from '../daemon-client.ts';
import type { IpcAnswer } from '../daemon-client.ts';
import { cmError, isCmError } from '../errors.ts';

type Env = Readonly<Record<string, string | undefined>>;

const REGISTER_TIMEOUT_MS = 10_000;

interface SessionFacts {
  name: string;
  meshId: string;
  sessionKey: string;
  /** the key of the member this session belongs to (its daemon's own connection) */
  memberKey: string | null;
}

export class DaemonSession {
  readonly #env: Env;
  readonly #home: string;
  readonly socket: string;
  #token: string | undefined;
  facts: SessionFacts | undefined;

  constructor(env: Env, home: string) {
    this.#env = env;
    this.#home = home;
    this.socket = daemonPaths(home).socket;
  }

  get token(): string | undefined {
    return this.#token;
  }

  async #register(): Promise<string> {
    const token = await sessionTokenFrom(this.#env);
    if (token === '') throw cmError('CM_ERR_UNAUTHORIZED', `${SESSION_TOKEN_FILE_ENV} names ${this.#env[SESSION_TOKEN_FILE_ENV]}, which holds no session token`, { hint: 'start the session again with claudemesh launch' });
    if (token !== undefined) return token;
    const claudePid = Number(this.#env.CLAUDE_PID) > 0 ? Number(this.#env.CLAUDE_PID) : process.ppid;
    const env = this.#env;
    const body = {
      sessionId: env.CLAUDE_CODE_SESSION_ID !== undefined && env.CLAUDE_CODE_SESSION_ID !== '' ? env.CLAUDE_CODE_SESSION_ID : `pid-${claudePid}`,
      pid: claudePid, cwd: env.CLAUDE_PROJECT_DIR ?? process.cwd(),
      ...(env.CLAUDEMESH_SESSION_NAME === undefined || env.CLAUDEMESH_SESSION_NAME === '' ? {} : { name: env.CLAUDEMESH_SESSION_NAME }),
      ...(env.CLAUDEMESH_MESH === undefined || env.CLAUDEMESH_MESH === '' ? {} : { mesh: env.CLAUDEMESH_MESH }),
    };
    const answer = await callDaemon(this.socket, 'POST', '/v1/sessions/register', body, REGISTER_TIMEOUT_MS);
    return String(answer.body.token);
  }

  /** The session token, starting the daemon and registering when needed. */
  async ensure(): Promise<string> {
    if (this.#token !== undefined) return this.#token;
    const ready = await ensureDaemonReady({ home: this.#home, env: this.#env });
    if (ready.outcome !== 'up' && ready.outcome !== 'started') {
      throw cmError('CM_ERR_DAEMON_NOT_RUNNING', `the claudemesh daemon is not running (${ready.outcome}${ready.reason === undefined ? '' : `: ${ready.reason}`})`);
    }
    const token = await this.#register();
    const me = await callDaemon(this.socket, 'GET', '/v1/sessions/me', undefined, undefined, sessionHeader(token));
    const session = me.body.session as Record<string, unknown>;
    this.facts = { name: String(session.name), meshId: String(session.meshId), sessionKey: String(session.sessionKey), memberKey: typeof me.body.memberKey === 'string' ? me.body.memberKey : null };
    this.#token = token;
    return token;
  }

  /** One request as the session; an unknown token (daemon restarted and let it go) registers again once. */
  async ask(method: 'GET' | 'POST', path: string, body?: unknown): Promise<IpcAnswer> {
    const token = await this.ensure();
    try {
      return await callDaemon(this.socket, method, path, body, undefined, sessionHeader(token));
    } catch (error) {
      if (!isCmError(error) || (error.code !== 'CM_ERR_UNAUTHORIZED' && error.code !== 'CM_ERR_DAEMON_NOT_RUNNING')) throw error;
      this.forget();
      return callDaemon(this.socket, method, path, body, undefined, sessionHeader(await this.ensure()));
    }
  }

  /** Drop the token, so the next call finds (or registers) the session again. */
  forget(): void {
    this.#token = undefined;
  }
}
