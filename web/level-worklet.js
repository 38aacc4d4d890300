// An AudioWorklet that measures loudness: every `windowMs` of input it posts
// {time, db}, where `time` is the AudioContext time at the end of the window and `db` the
// window's RMS level in dBFS (-Infinity for digital silence). app.js runs one on the
// microphone (meter, end of the caller's speech) and one on the reply stream (onset of the
// reply audio). Both use the same context clock, so their times can be subtracted.
class LevelMeter extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const windowMs = (options.processorOptions && options.processorOptions.windowMs) || 10;
    this.windowFrames = Math.max(128, Math.round((sampleRate * windowMs) / 1000));
    this.sum = 0;
    this.frames = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    // No input connected yet (or a stream with no track): count it as silence so the
    // clock keeps moving.
    const length = channel ? channel.length : 128;
    if (channel) {
      for (let i = 0; i < channel.length; i++) this.sum += channel[i] * channel[i];
    }
    this.frames += length;
    if (this.frames >= this.windowFrames) {
      const rms = Math.sqrt(this.sum / this.frames);
      const end = currentTime + length / sampleRate;
      this.port.postMessage({ time: end, db: rms > 0 ? 20 * Math.log10(rms) : -Infinity });
      this.sum = 0;
      this.frames = 0;
    }
    return true;
  }
}

registerProcessor("level-meter", LevelMeter);
