// AudioWorklet: microphone to 16 kHz PCM16 mono in 20 ms chunks, posted to the page.
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.target = (options.processorOptions && options.processorOptions.rate) || 16000;
    this.ratio = sampleRate / this.target;
    this.chunk = Math.round(this.target / 50); // 20 ms
    this.buffer = new Int16Array(this.chunk);
    this.filled = 0;
    this.position = 0; // fractional read position in the input, for resampling
    this.acc = 0;
    this.accCount = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    // Averaging the input samples that fall into each output sample: a box low-pass
    // filter and decimation in one step (48 kHz -> 16 kHz averages 3).
    for (let i = 0; i < input.length; i++) {
      this.acc += input[i];
      this.accCount += 1;
      this.position += 1;
      if (this.position >= this.ratio) {
        this.position -= this.ratio;
        const v = Math.max(-1, Math.min(1, this.acc / this.accCount));
        this.acc = 0;
        this.accCount = 0;
        this.buffer[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
        if (this.filled === this.chunk) {
          this.port.postMessage(this.buffer.slice(0).buffer, []);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
