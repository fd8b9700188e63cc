// "did you mean …?": the known word nearest to a mistyped one, by edit distance. Only close
// matches are offered (at most 2 edits, and fewer than half the word), so a suggestion is
// a likely typo, never a guess.

const MAX_EDITS = 2;

/** Edits between two words: insert, delete, replace, or swap two neighbours ("sned" → "send" is one). */
function distance(a: string, b: string): number {
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, index) => index)];
  for (let i = 1; i <= a.length; i += 1) {
    const row = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min((rows[i - 1]?.[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (rows[i - 1]?.[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, (rows[i - 2]?.[j - 2] ?? 0) + 1);
      row.push(best);
    }
    rows.push(row);
  }
  return rows[a.length]?.[b.length] ?? 0;
}

/** The candidate nearest to `word`, when it is close enough to be a typo of it. */
function nearest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const edits = distance(word.toLowerCase(), candidate.toLowerCase());
    if (edits < bestDistance) {
      best = candidate;
      bestDistance = edits;
    }
  }
  const prefix = best !== undefined && word.length >= 2 && best.startsWith(word);
  return prefix || (bestDistance <= MAX_EDITS && bestDistance < word.length / 2) ? best : undefined;
}

/** " (did you mean X?)" or nothing. */
export function didYouMean(word: string, candidates: Iterable<string>, show: (candidate: string) => string = (candidate) => candidate): string {
  const match = nearest(word, candidates);
  return match === undefined ? '' : ` (did you mean ${show(match)}?)`;
}
