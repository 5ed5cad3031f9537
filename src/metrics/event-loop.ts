/**
 * The event loop's delay (`nodejs_eventloop_lag_*`, the names and aggregators of prom-client's `eventLoopLag`), in
 * place of prom-client's module, which reports two things wrongly (docs/operations.md, "Metrics"):
 *
 * - Node's `monitorEventLoopDelay` records the time between the ticks of its sampling timer, the sampling interval
 *   included: on an idle loop sampled every 100 ms, prom-client reports 0.100 s. Here the interval is taken off,
 *   so a value is how late the timer ran (0 on an idle loop).
 * - prom-client reads and resets the histogram at every scrape; a scrape within two intervals of the last finds no
 *   sample, and reports the mean and stddev as NaN (printed `Nan`, which strict parsers refuse) and the min as
 *   9.2e9 s. Here a window without a sample leaves those gauges out of the scrape (no series), so the primary of
 *   `workers` averages only the processes that have one, and the window goes on to the next scrape.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Gauge, type Registry } from 'prom-client';

/** What one window (between two scrapes) of samples showed, in seconds, the sampling interval taken off. */
interface Window {
  min: number;
  max: number;
  mean: number;
  stddev: number;
  p50: number;
  p90: number;
  p99: number;
}

/** A gauge whose value is one field of the last window: no series when the window had no sample. */
class WindowGauge extends Gauge<string> {
  readonly #read: () => number | undefined;

  constructor(name: string, help: string, aggregator: 'min' | 'max' | 'average', registry: Registry, read: () => number | undefined) {
    super({ name, help, registers: [registry], aggregator });
    this.#read = read;
  }

  /** Read at a scrape, after the window was taken (by the gauge registered before this one). */
  override async get(): Promise<Awaited<ReturnType<Gauge<string>['get']>>> {
    const value = this.#read();
    if (value !== undefined) {
      this.set(value);
      return super.get();
    }
    return { ...(await super.get()), values: [] };
  }
}

/**
 * Registers the event loop's delay gauges on `registry`, sampled every `resolutionMs`: `nodejs_eventloop_lag_seconds`
 * (how long a `setImmediate` took to run, measured at a scrape and reported at the next, as prom-client does) and
 * the min, max, mean, stddev, p50, p90 and p99 of how late the sampling timer ran since the last scrape.
 */
export function eventLoopDelay(registry: Registry, resolutionMs: number): void {
  const histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: resolutionMs });
  histogram.enable();
  const interval = resolutionMs * 1e6;
  const late = (ns: number) => Math.max(0, ns - interval) / 1e9;
  let window: Window | undefined;
  let immediateLag = 0;
  // The first gauge's collect reads and resets the histogram for the whole scrape (registered first, collected first).
  new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers: [registry],
    aggregator: 'average',
    collect(this: Gauge<string>) {
      const start = process.hrtime.bigint();
      setImmediate(() => (immediateLag = Number(process.hrtime.bigint() - start) / 1e9));
      this.set(immediateLag);
      window =
        histogram.count === 0
          ? undefined
          : {
              min: late(histogram.min),
              max: late(histogram.max),
              mean: late(histogram.mean),
              stddev: histogram.stddev / 1e9,
              p50: late(histogram.percentile(50)),
              p90: late(histogram.percentile(90)),
              p99: late(histogram.percentile(99)),
            };
      // Node's histogram records nothing at the first tick after a reset (it has no tick before it to measure
      // from): reset at every scrape, scrapes at most two intervals apart would never see a sample.
      if (window !== undefined) histogram.reset();
    },
  });
  const field = (key: keyof Window) => () => window?.[key];
  new WindowGauge('nodejs_eventloop_lag_min_seconds', 'The minimum recorded event loop delay.', 'min', registry, field('min'));
  new WindowGauge('nodejs_eventloop_lag_max_seconds', 'The maximum recorded event loop delay.', 'max', registry, field('max'));
  new WindowGauge('nodejs_eventloop_lag_mean_seconds', 'The mean of the recorded event loop delays.', 'average', registry, field('mean'));
  new WindowGauge('nodejs_eventloop_lag_stddev_seconds', 'The standard deviation of the recorded event loop delays.', 'average', registry, field('stddev'));
  new WindowGauge('nodejs_eventloop_lag_p50_seconds', 'The 50th percentile of the recorded event loop delays.', 'average', registry, field('p50'));
  new WindowGauge('nodejs_eventloop_lag_p90_seconds', 'The 90th percentile of the recorded event loop delays.', 'average', registry, field('p90'));
  new WindowGauge('nodejs_eventloop_lag_p99_seconds', 'The 99th percentile of the recorded event loop delays.', 'average', registry, field('p99'));
}
