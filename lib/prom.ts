// A dependency-free metrics registry rendering the Prometheus text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/); only the three metric kinds
// the broker exports. Registry.snapshot() gathers plain data and formatPrometheus() is a pure
// function of it, so the text rendering is testable without live metrics.

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface MetricOptions {
  name: string;
  help: string;
  labelNames?: string[];
  /** label name → the only values accepted for it; anything else is recorded as OTHER_LABEL_VALUE */
  labelValues?: Record<string, readonly string[]>;
}

export interface HistogramOptions extends MetricOptions { buckets?: readonly number[] }
export interface Sample { suffix: '' | '_bucket' | '_sum' | '_count'; labels: [string, string][]; value: number }
export interface MetricSnapshot { name: string; help: string; type: MetricType; samples: Sample[] }

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OTHER_LABEL_VALUE = 'other';
/** Label values partly come from clients; past this many series a metric stops growing. */
export const MAX_SERIES_PER_METRIC = 1000;
/** Seconds, tuned for request latencies from a few milliseconds to ten seconds. */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

// Name grammars from the Prometheus data model; names starting with "__" are reserved.
const METRIC_NAME_PATTERN = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME_PATTERN = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const RESERVED_LABEL_PREFIX = '__';
const BUCKET_LABEL = 'le';

// Symbol-keyed so the registry can read samples without widening the public class API.
const COLLECT_SAMPLES = Symbol('collectSamples');

interface Series<State> { labels: [string, string][]; state: State }

/** Label validation, bounding and series storage shared by the three metric kinds. */
class SeriesTable<State> {
  readonly #metricName: string;
  readonly #labelNames: readonly string[];
  readonly #allowedValues = new Map<string, Set<string>>();
  readonly #series = new Map<string, Series<State>>();
  readonly #createState: () => State;

  constructor(options: MetricOptions, createState: () => State, reservedLabel?: string) {
    const nameValid = typeof options.name === 'string' && METRIC_NAME_PATTERN.test(options.name);
    if (!nameValid) throw new TypeError(`invalid metric name ${JSON.stringify(options.name)}`);
    if (typeof options.help !== 'string') throw new TypeError(`metric "${options.name}": help must be a string`);
    this.#metricName = options.name;
    this.#createState = createState;
    const labelNames = options.labelNames ?? [];
    labelNames.forEach((labelName, index) => {
      const valid = typeof labelName === 'string' && LABEL_NAME_PATTERN.test(labelName) && !labelName.startsWith(RESERVED_LABEL_PREFIX);
      const repeated = labelNames.indexOf(labelName) !== index;
      if (!valid || repeated || labelName === reservedLabel) {
        throw new TypeError(`metric "${options.name}": invalid or repeated label name ${JSON.stringify(labelName)}`);
      }
    });
    this.#labelNames = [...labelNames];
    for (const [labelName, values] of Object.entries(options.labelValues ?? {})) {
      const valid = this.#labelNames.includes(labelName) && Array.isArray(values) && values.every((value) => typeof value === 'string');
      if (!valid) {
        throw new TypeError(`metric "${options.name}": labelValues["${labelName}"] must be strings for a label listed in labelNames`);
      }
      this.#allowedValues.set(labelName, new Set(values));
    }
    this.#precreate();
  }

  // Free-form labels have no known values, so only fully bounded (or unlabelled) metrics are pre-created.
  #precreate(): void {
    let combinations: string[][] = [[]];
    for (const labelName of this.#labelNames) {
      const allowed = this.#allowedValues.get(labelName);
      if (allowed === undefined) return;
      combinations = combinations.flatMap((prefix) => [...allowed].map((value) => [...prefix, value]));
    }
    if (combinations.length > MAX_SERIES_PER_METRIC) throw new RangeError(`metric "${this.#metricName}": labelValues declare too many series`);
    for (const values of combinations) this.#add(values, JSON.stringify(values));
  }
  #add(values: string[], key: string): State {
    const labels = values.map((value, index): [string, string] => [this.#labelNames[index] ?? '', value]);
    const state = this.#createState();
    this.#series.set(key, { labels, state });
    return state;
  }
  #resolveValues(labels: Record<string, string> | undefined): string[] {
    // null fails Object.keys below with its own TypeError.
    if (labels !== undefined && typeof labels !== 'object') throw new TypeError(`metric "${this.#metricName}": labels must be an object`);
    const given = labels ?? {};
    for (const labelName of Object.keys(given)) {
      if (!this.#labelNames.includes(labelName)) throw new TypeError(`metric "${this.#metricName}": unknown label "${labelName}"`);
    }
    return this.#labelNames.map((labelName) => {
      // Object.hasOwn so a label called e.g. "constructor" never reads Object.prototype.
      const value: unknown = Object.hasOwn(given, labelName) ? given[labelName] : undefined;
      if (typeof value !== 'string') throw new TypeError(`metric "${this.#metricName}": missing label "${labelName}" (expected a string)`);
      const allowed = this.#allowedValues.get(labelName);
      return allowed === undefined || allowed.has(value) ? value : OTHER_LABEL_VALUE;
    });
  }

  /** Never creates a series: reads of unseen labels must not grow the table. */
  find(labels: Record<string, string> | undefined): State | undefined {
    return this.#locate(labels).existing;
  }
  obtain(labels: Record<string, string> | undefined): State {
    const located = this.#locate(labels);
    return located.existing ?? this.#add(located.values, located.key);
  }
  #locate(labels: Record<string, string> | undefined): { values: string[]; key: string; existing: State | undefined } {
    const values = this.#resolveValues(labels);
    const key = JSON.stringify(values);
    const existing = this.#series.get(key)?.state;
    if (existing !== undefined || this.#series.size < MAX_SERIES_PER_METRIC) return { values, key, existing };
    // Over the cap: fold free-form values into "other" but keep bounded ones, which are already
    // finite, so the overflow adds at most one series per combination of bounded values.
    const folded = values.map((value, index) => this.#allowedValues.has(this.#labelNames[index] ?? '') ? value : OTHER_LABEL_VALUE);
    const foldedKey = JSON.stringify(folded);
    return { values: folded, key: foldedKey, existing: this.#series.get(foldedKey)?.state };
  }
  entries(): IterableIterator<Series<State>> {
    return this.#series.values();
  }
}

function copyLabels(labels: [string, string][]): [string, string][] {
  return labels.map(([name, value]): [string, string] => [name, value]);
}

/** Counter and Gauge differ only in which updates they allow. */
class ScalarMetric {
  protected readonly table: SeriesTable<{ value: number }>;
  constructor(options: MetricOptions) {
    this.table = new SeriesTable(options, () => ({ value: 0 }));
  }
  get(labels?: Record<string, string>): number {
    return this.table.find(labels)?.value ?? 0;
  }
  [COLLECT_SAMPLES](): Sample[] {
    return [...this.table.entries()].map(({ labels, state }): Sample => ({ suffix: '', labels: copyLabels(labels), value: state.value }));
  }
}

export class Counter extends ScalarMetric {
  inc(labels?: Record<string, string>, value = 1): void {
    // A counter only goes up (Prometheus reads a decrease as a restart), so negatives are bugs.
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new RangeError(`counter increment must be a finite number >= 0, received ${String(value)}`);
    }
    this.table.obtain(labels).value += value;
  }
}

export class Gauge extends ScalarMetric {
  set(value: number, labels?: Record<string, string>): void {
    // NaN and infinities are legal gauge values in the exposition format, so only the type is checked.
    if (typeof value !== 'number') throw new TypeError(`gauge value must be a number, received ${typeof value}`);
    this.table.obtain(labels).value = value;
  }
  inc(labels?: Record<string, string>, value = 1): void {
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new RangeError(`gauge step must be finite, received ${String(value)}`);
    this.table.obtain(labels).value += value;
  }
  dec(labels?: Record<string, string>, value = 1): void {
    this.inc(labels, -value);
  }
}

interface HistogramState { cumulativeCounts: number[]; sum: number; count: number }

export class Histogram {
  readonly #table: SeriesTable<HistogramState>;
  readonly #bounds: readonly number[];
  constructor(options: HistogramOptions) {
    const bounds = [...(options.buckets ?? DEFAULT_BUCKETS)];
    // +Inf is implicit (always equal to count), so only finite, strictly increasing bounds are accepted.
    const increasing = bounds.every((bound, index) => Number.isFinite(bound) && (index === 0 || bound > (bounds[index - 1] ?? bound)));
    if (bounds.length === 0 || !increasing) {
      throw new TypeError(`histogram "${options.name}": buckets must be finite and strictly increasing: ${JSON.stringify(options.buckets)}`);
    }
    this.#bounds = bounds;
    this.#table = new SeriesTable(options, () => ({ cumulativeCounts: bounds.map(() => 0), sum: 0, count: 0 }), BUCKET_LABEL);
  }
  observe(value: number, labels?: Record<string, string>): void {
    if (typeof value !== 'number' || Number.isNaN(value)) throw new RangeError(`observation must be a number, received ${String(value)}`);
    const state = this.#table.obtain(labels);
    // Counts are stored cumulatively, as exposed: "le" means less than or equal to the bound.
    this.#bounds.forEach((bound, index) => {
      if (value <= bound) state.cumulativeCounts[index] = (state.cumulativeCounts[index] ?? 0) + 1;
    });
    state.sum += value;
    state.count += 1;
  }
  get(labels?: Record<string, string>): { buckets: number[]; sum: number; count: number } {
    const state = this.#table.find(labels);
    if (state === undefined) return { buckets: this.#bounds.map(() => 0), sum: 0, count: 0 };
    return { buckets: [...state.cumulativeCounts], sum: state.sum, count: state.count };
  }
  [COLLECT_SAMPLES](): Sample[] {
    const samples: Sample[] = [];
    for (const { labels, state } of this.#table.entries()) {
      // The implicit +Inf bucket closes the list and always equals the total count.
      [...this.#bounds, Infinity].forEach((bound, index) => {
        const value = bound === Infinity ? state.count : (state.cumulativeCounts[index] ?? 0);
        samples.push({ suffix: '_bucket', labels: [...copyLabels(labels), [BUCKET_LABEL, formatValue(bound)]], value });
      });
      samples.push({ suffix: '_sum', labels: copyLabels(labels), value: state.sum });
      samples.push({ suffix: '_count', labels: copyLabels(labels), value: state.count });
    }
    return samples;
  }
}

interface Registered { help: string; type: MetricType; metric: Counter | Gauge | Histogram; collect: (() => void) | undefined }

export class Registry {
  readonly #metrics = new Map<string, Registered>();

  #register<M extends Counter | Gauge | Histogram>(options: MetricOptions, type: MetricType, metric: M, collect?: () => void): M {
    if (this.#metrics.has(options.name)) throw new TypeError(`metric "${options.name}" is already registered`);
    this.#metrics.set(options.name, { help: options.help, type, metric, collect });
    return metric;
  }
  counter(options: MetricOptions): Counter {
    return this.#register(options, 'counter', new Counter(options));
  }
  gauge(options: MetricOptions & { collect?: () => number | void }): Gauge {
    const gauge = new Gauge(options);
    const callback = options.collect;
    // A returned number sets the unlabelled series; labelled gauges call set() themselves.
    const collect = callback === undefined ? undefined : (): void => {
      const result = callback();
      if (typeof result === 'number') gauge.set(result);
    };
    return this.#register(options, 'gauge', gauge, collect);
  }
  histogram(options: HistogramOptions): Histogram {
    return this.#register(options, 'histogram', new Histogram(options));
  }
  /** Runs collect callbacks, then copies every series. A throwing callback propagates: a silently stale gauge would hide the bug. */
  snapshot(): MetricSnapshot[] {
    for (const registered of this.#metrics.values()) registered.collect?.();
    return [...this.#metrics].map(([name, registered]): MetricSnapshot => ({
      name,
      help: registered.help,
      type: registered.type,
      samples: registered.metric[COLLECT_SAMPLES](),
    }));
  }
}

function formatValue(value: number): string {
  // Prometheus text exposition format 0.0.4 spells the special floats +Inf, -Inf and NaN (Go's ParseFloat reads the rest).
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

// Prometheus text exposition format 0.0.4: HELP escapes only backslash and newline;
// label values additionally escape the double quote.
function escapeHelp(text: string): string {
  return text.replaceAll('\\', '\\\\').replaceAll('\n', '\\n');
}
function escapeLabelValue(text: string): string {
  return escapeHelp(text).replaceAll('"', '\\"');
}

function formatSample(name: string, sample: Sample): string {
  const labelText = sample.labels.length === 0
    ? ''
    : `{${sample.labels.map(([labelName, value]) => `${labelName}="${escapeLabelValue(value)}"`).join(',')}}`;
  return `${name}${sample.suffix}${labelText} ${formatValue(sample.value)}`;
}

export function formatPrometheus(snapshot: readonly MetricSnapshot[]): string {
  const lines: string[] = [];
  for (const metric of snapshot) {
    lines.push(`# HELP ${metric.name} ${escapeHelp(metric.help)}`);
    lines.push(`# TYPE ${metric.name} ${metric.type}`);
    for (const sample of metric.samples) lines.push(formatSample(metric.name, sample));
  }
  // The format requires every line, including the last, to end with a line feed.
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}
