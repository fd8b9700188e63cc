// A deliberately independent checker for Prometheus text exposition format 0.0.4, written
// from the spec rather than from lib/broker/metrics.ts, so tests of /metrics catch formatter bugs
// instead of agreeing with them. It is stricter than Prometheus: every line must be a HELP,
// TYPE or sample line (no blank lines or free comments), which is what our formatter emits.

const METRIC_NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const HELP_LINE = new RegExp(`^# HELP (${METRIC_NAME})(?: (.*))?$`);
const TYPE_LINE = new RegExp(`^# TYPE (${METRIC_NAME}) (counter|gauge|histogram)$`);
const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"/g;
// HELP text may only escape backslash and newline; label values also the double quote.
const VALID_HELP_TEXT = /^(?:[^\\]|\\[\\n])*$/;
const VALID_LABEL_VALUE = /^(?:[^\\]|\\[\\n"])*$/;
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'] as const;

/** The metric family a sample belongs to, given the families declared so far. */
function familyOf(sampleName: string, types: ReadonlyMap<string, string>): string | undefined {
  const plainType = types.get(sampleName);
  if (plainType !== undefined && plainType !== 'histogram') return sampleName;
  for (const suffix of HISTOGRAM_SUFFIXES) {
    if (!sampleName.endsWith(suffix)) continue;
    const base = sampleName.slice(0, -suffix.length);
    if (types.get(base) === 'histogram') return base;
  }
  return undefined;
}

/** Every problem found in `text`, each naming its line number; an empty list means valid. */
export function lintExposition(text: string): string[] {
  const problems: string[] = [];
  if (text === '') return problems;
  if (!text.endsWith('\n')) problems.push('exposition must end with a newline');
  const lines = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
  const types = new Map<string, string>();
  const helped = new Set<string>();
  const seenSeries = new Set<string>();
  let currentFamily: string | undefined;

  lines.forEach((line, index) => {
    const where = `line ${index + 1} (${JSON.stringify(line)})`;
    const help = HELP_LINE.exec(line);
    if (help !== null) {
      const name = help[1] ?? '';
      if (helped.has(name)) problems.push(`${where}: second HELP for ${name}`);
      helped.add(name);
      if (!VALID_HELP_TEXT.test(help[2] ?? '')) problems.push(`${where}: bad escape in HELP text`);
      return;
    }
    const type = TYPE_LINE.exec(line);
    if (type !== null) {
      const name = type[1] ?? '';
      if (types.has(name)) problems.push(`${where}: second TYPE for ${name}`);
      types.set(name, type[2] ?? '');
      currentFamily = name;
      return;
    }
    const sample = SAMPLE_LINE.exec(line);
    if (sample === null) {
      problems.push(`${where}: neither HELP, TYPE nor a sample line`);
      return;
    }
    const sampleName = sample[1] ?? '';
    const family = familyOf(sampleName, types);
    if (family === undefined) {
      problems.push(`${where}: sample ${sampleName} comes before its TYPE line`);
    } else if (family !== currentFamily) {
      problems.push(`${where}: sample ${sampleName} is not grouped under its TYPE line`);
    }
    const labelNames: string[] = [];
    for (const pair of (sample[2] ?? '').matchAll(LABEL_PAIR)) {
      labelNames.push(pair[1] ?? '');
      if (!VALID_LABEL_VALUE.test(pair[2] ?? '')) problems.push(`${where}: bad escape in label ${pair[1] ?? ''}`);
    }
    if (new Set(labelNames).size !== labelNames.length) problems.push(`${where}: repeated label name`);
    if (family !== undefined && types.get(family) === 'histogram' && sampleName.endsWith('_bucket') && !labelNames.includes('le')) {
      problems.push(`${where}: histogram bucket without an le label`);
    }
    const seriesIdentity = line.slice(0, line.lastIndexOf(' '));
    if (seenSeries.has(seriesIdentity)) problems.push(`${where}: series repeated`);
    seenSeries.add(seriesIdentity);
  });
  return problems;
}
