/** A seeded random source: mulberry32, so a campaign with the same seed draws the same world. */
export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** A new independent stream, seeded from this one (world building and control plane never share draws). */
  fork(): Random;
}

export function createRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, fork: () => createRandom(Math.floor(next() * 4294967296)) };
}

/** A log-normal draw given its median and the sigma of its logarithm. */
export function logNormal(random: Random, median: number, sigma: number): number {
  return median * Math.exp(sigma * standardNormal(random));
}

export function standardNormal(random: Random): number {
  const u = Math.max(Number.EPSILON, random.next());
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random.next());
}

/** An exponential draw of the given mean. */
export function exponential(random: Random, mean: number): number {
  return -mean * Math.log(Math.max(Number.EPSILON, 1 - random.next()));
}

/** An index drawn with the given (unnormalised) weights. */
export function weightedIndex(random: Random, weights: readonly number[]): number {
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  let left = random.next() * total;
  for (let index = 0; index < weights.length; index += 1) {
    left -= weights[index] as number;
    if (left < 0) return index;
  }
  return weights.length - 1;
}

/** A Zipf-like rank in [0, count): rank r has weight 1 / (r + 1)^exponent. */
export function zipfWeights(count: number, exponent: number): number[] {
  return Array.from({ length: count }, (_, rank) => 1 / (rank + 1) ** exponent);
}
