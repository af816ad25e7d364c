/* Dauys microphone capture: AudioWorkletProcessor.
 * Input: the AudioContext's native rate (44.1/48 kHz, any channel count).
 * Output: 16 kHz mono Int16 (pcm_s16le) chunks posted to the main thread as
 *   {type: "pcm", pcm: ArrayBuffer, rms: Number}   (ArrayBuffer transferred)
 * Resampling: windowed-sinc (Blackman) low-pass evaluated at fractional input
 * positions from an oversampled kernel table with linear interpolation, so it
 * both anti-aliases and handles non-integer ratios (44.1 kHz -> 16 kHz).
 * Send the string "stop" on the port to end the processor.
 */
'use strict';

const PHASES = 256; // kernel table oversampling (entries per input sample)
const ZERO_X = 24;  // kernel half-width in output-rate samples

class DauysCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.outRate = o.outRate || 16000;
    this.step = sampleRate / this.outRate;          // input samples per output sample
    this.direct = Math.abs(this.step - 1) < 1e-9;
    this.chunk = Math.max(80, Math.round(this.outRate * (o.chunkMs || 20) / 1000));
    this.out = new Int16Array(this.chunk);
    this.outN = 0;
    this.sumSq = 0;
    this.alive = true;

    const scale = Math.min(1, 1 / this.step);        // output/input bandwidth ratio
    const fc = 0.5 * scale * 0.92;                    // cutoff, cycles per input sample (~7.4 kHz)
    const half = this.half = Math.ceil(ZERO_X / scale); // half-width in input samples
    const len = 2 * half * PHASES + 2;
    const tab = this.tab = new Float32Array(len);
    for (let i = 0; i < len; i++) {
      const x = i / PHASES - half;                    // offset in input samples
      const a = 2 * fc * x;
      const sinc = a === 0 ? 1 : Math.sin(Math.PI * a) / (Math.PI * a);
      const w = (x + half) / (2 * half);              // 0..1 over the window
      const win = w < 0 || w > 1 ? 0
        : 0.42 - 0.5 * Math.cos(2 * Math.PI * w) + 0.08 * Math.cos(4 * Math.PI * w);
      tab[i] = 2 * fc * sinc * win;
    }
    // History buffer, primed with `half` zeros so the first output has left context.
    this.buf = new Float32Array(2 * half + 8192);
    this.n = half;
    this.t = half;                                    // position of next output sample in buf

    this.port.onmessage = (e) => { if (e.data === 'stop') this.alive = false; };
  }

  emit(v) {
    if (v > 1) v = 1; else if (v < -1) v = -1;
    this.sumSq += v * v;
    this.out[this.outN++] = v < 0 ? v * 32768 : v * 32767;
    if (this.outN === this.chunk) {
      const rms = Math.sqrt(this.sumSq / this.chunk);
      const pcm = this.out.buffer;
      this.port.postMessage({ type: 'pcm', pcm, rms }, [pcm]);
      this.out = new Int16Array(this.chunk);
      this.outN = 0;
      this.sumSq = 0;
    }
  }

  process(inputs) {
    if (!this.alive) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const chans = input.length, frames = input[0].length;

    if (this.direct) {
      for (let i = 0; i < frames; i++) {
        let s = 0;
        for (let c = 0; c < chans; c++) s += input[c][i];
        this.emit(s / chans);
      }
      return true;
    }

    // Append (mixed-down) input to the history buffer.
    if (this.n + frames > this.buf.length) {
      const nb = new Float32Array((this.n + frames) * 2);
      nb.set(this.buf.subarray(0, this.n));
      this.buf = nb;
    }
    const buf = this.buf;
    for (let i = 0; i < frames; i++) {
      let s = 0;
      for (let c = 0; c < chans; c++) s += input[c][i];
      buf[this.n + i] = s / chans;
    }
    this.n += frames;

    // Produce every output sample whose full kernel support is available.
    const half = this.half, tab = this.tab, step = this.step;
    let t = this.t;
    while (Math.floor(t) + half < this.n) {
      const k0 = Math.floor(t) - half + 1, k1 = Math.floor(t) + half;
      let f = (t - k0 + half) * PHASES;               // table position for tap k0
      let acc = 0, wsum = 0;
      for (let k = k0; k <= k1; k++, f -= PHASES) {
        const i = f | 0;
        const w = tab[i] + (f - i) * (tab[i + 1] - tab[i]);
        acc += buf[k] * w;
        wsum += w;
      }
      this.emit(wsum > 0 ? acc / wsum : 0);           // normalise: exact unity DC gain
      t += step;
    }
    // Drop history that no future output needs.
    const drop = Math.floor(t) - half + 1;
    if (drop > 0) {
      buf.copyWithin(0, drop, this.n);
      this.n -= drop;
      t -= drop;
    }
    this.t = t;
    return true;
  }
}

registerProcessor('dauys-capture', DauysCapture);
