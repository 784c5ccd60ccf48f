// Zipf-distributed ranks in 1..n (P(k) ∝ 1/k^s) by rejection-inversion (Hörmann & Derflinger
// 1996, as in Apache Commons RNG): O(1) per sample, no table, works for n in the millions.

export class Zipf {
  constructor(n, s) {
    if (!(n >= 1) || !(s > 0)) throw new Error('zipf: need n >= 1 and s > 0');
    this.n = n;
    this.s = s;
    this.hIntegralX1 = this.hIntegral(1.5) - 1.0;
    this.hIntegralN = this.hIntegral(n + 0.5);
    this.sThreshold = 2.0 - this.hIntegralInverse(this.hIntegral(2.5) - this.h(2.0));
  }

  /** A rank in 1..n; rank 1 is the most popular. */
  sample() {
    for (;;) {
      const u = this.hIntegralN + Math.random() * (this.hIntegralX1 - this.hIntegralN);
      const x = this.hIntegralInverse(u);
      let k = Math.floor(x + 0.5);
      if (k < 1) k = 1;
      else if (k > this.n) k = this.n;
      if (k - x <= this.sThreshold || u >= this.hIntegral(k + 0.5) - this.h(k)) return k;
    }
  }

  h(x) {
    return Math.exp(-this.s * Math.log(x));
  }

  hIntegral(x) {
    const logX = Math.log(x);
    return helper2((1.0 - this.s) * logX) * logX;
  }

  hIntegralInverse(x) {
    let t = x * (1.0 - this.s);
    if (t < -1.0) t = -1.0;
    return Math.exp(helper1(t) * x);
  }
}

// log(1+x)/x, stable near 0.
function helper1(x) {
  return Math.abs(x) > 1e-8 ? Math.log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

// (exp(x)-1)/x, stable near 0.
function helper2(x) {
  return Math.abs(x) > 1e-8 ? Math.expm1(x) / x : 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}
