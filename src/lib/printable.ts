/**
 * C0 and C1 controls, DEL, and the bidi controls that can reorder what a terminal shows
 * (embeddings, overrides, isolates, LRM/RLM), as a regular-expression class body: the API refuses
 * them in asset ids, and the agent strips them from what it prints.
 */
export const UNPRINTABLE_CLASS = '\\u0000-\\u001f\\u007f-\\u009f\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069';

const UNPRINTABLE = new RegExp(`[${UNPRINTABLE_CLASS}]`, 'gu');

/** Text from outside (a server, a catalog) made safe to print on a terminal: unprintable characters are removed. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, '');
}
