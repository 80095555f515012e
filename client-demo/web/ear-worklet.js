// AudioWorklet, loaded only with ?test=1: the test's ear on the playback graph.
//
// One node per utterance sits between that utterance's buffer sources and the speakers.
// Its input has two channels: 0 is the speech, passed through unchanged to the output;
// 1 is a constant 1.0 "this utterance's sample is playing now" marker that the page adds
// to every buffer in test mode (it never reaches the speakers). Counting marker frames
// counts exactly how much of the utterance was played, silence between words included,
// at the context's own rate; the audio clock (currentTime) says when.
class Ear extends AudioWorkletProcessor {
  constructor() {
    super();
    this.played = 0; // frames of this utterance that went to the output
    this.loud = 0; // of those, frames with audible speech (|x| >= 4 LSB of PCM16)
    this.lastPlayed = -1; // audio-clock time (s) of the last played frame
    this.lastLoud = -1; // audio-clock time (s) of the last audible frame
    this.dirty = false;
    this.quanta = 0;
  }

  process(inputs, outputs) {
    const input = inputs[0];
    const out = outputs[0][0];
    const speech = input && input[0];
    const marker = input && input[1];
    let active = false;
    if (speech && marker) {
      out.set(speech);
      for (let i = 0; i < speech.length; i++) {
        if (marker[i] < 0.5) continue;
        active = true;
        this.played += 1;
        this.lastPlayed = currentTime + i / sampleRate;
        if (Math.abs(speech[i]) >= 4 / 32768) {
          this.loud += 1;
          this.lastLoud = this.lastPlayed;
        }
      }
    } else {
      out.fill(0);
    }
    this.quanta += 1;
    // Report every 8 render quanta while playing, and at once when playing stops.
    if (active) this.dirty = true;
    if (this.dirty && (!active || this.quanta % 8 === 0)) {
      this.port.postMessage({ played: this.played, loud: this.loud, lastPlayed: this.lastPlayed,
                              lastLoud: this.lastLoud, idle: !active });
      this.dirty = active;
    }
    return true;
  }
}

registerProcessor("ear", Ear);
