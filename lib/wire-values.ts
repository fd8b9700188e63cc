// The values a message's priority and a peer's status take on the wire (lib/protocol.ts
// declares the frames that carry them). A module of its own, without dependencies: the CLI
// checks --priority and `status set` against these before it asks the daemon, and a
// command that starts, asks and exits should not build every frame shape just for that.

export const PRIORITIES = ['now', 'next', 'low'] as const;
export const STATUSES = ['idle', 'working', 'dnd'] as const;
