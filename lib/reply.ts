// Replies: a message that answers another carries the id it answers (the broker message id
// or the client message id the recipient saw) inside the sealed text, as a first line the
// recipient's daemon takes off again. Inside the ciphertext, the broker never learns who
// answers what, and the wire protocol needs no field for it. The line starts with U+0001, a
// character nobody types, so ordinary text can never be taken for a reply header.

const REPLY_HEADER = /^\u0001reply_to=([A-Za-z0-9._:-]{1,128})\n/;
export const REPLY_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The text to seal for a reply to `replyTo` (the text alone when there is none). */
export function encodeReply(text: string, replyTo: string | undefined): string {
  return replyTo === undefined ? text : `\u0001reply_to=${replyTo}\n${text}`;
}

/** A decrypted body split into the text and the id it replies to (null when none). */
export function decodeReply(body: string): { text: string; replyTo: string | null } {
  const match = REPLY_HEADER.exec(body);
  return match === null ? { text: body, replyTo: null } : { text: body.slice(match[0].length), replyTo: match[1] ?? null };
}
