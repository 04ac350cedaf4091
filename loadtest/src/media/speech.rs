//! The teacher's voice: a speech-like signal (a glottal-pulse-like harmonic series whose pitch
//! glides, shaped by two moving formants, switched on and off at syllable rate with pauses
//! between phrases), encoded with libopus (the `opus` crate) in 20 ms frames.
//!
//! A few seconds are encoded once at start and looped: the packets are real Opus, with the
//! sizes and the voice/silence pattern (DTX off, so silence still sends small frames) of speech.

use std::f64::consts::PI;

/// 48 kHz, 20 ms.
pub const SAMPLE_RATE: u32 = 48_000;
pub const FRAME_SAMPLES: usize = 960;

/// Errors from libopus.
#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct SpeechError(#[from] opus::Error);

/// Samples of the speech-like signal, mono, `seconds` long, deterministic.
pub fn speech_signal(seconds: f64) -> Vec<i16> {
    let n = (seconds * SAMPLE_RATE as f64) as usize;
    let sr = SAMPLE_RATE as f64;
    let mut out = Vec::with_capacity(n);
    let mut phase = 0.0f64;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        let t = i as f64 / sr;
        // phrases of 2.5 s: 2 s of syllables, then 0.5 s pause
        let in_phrase = (t % 2.5) < 2.0;
        // syllables at 4 Hz: raised-cosine envelope, the vowel nucleus in the middle
        let syl = (t * 4.0).fract();
        let env = if in_phrase {
            (0.5 - 0.5 * (2.0 * PI * syl).cos()).powf(1.5)
        } else {
            0.0
        };
        // pitch glides 110..170 Hz over each phrase (intonation)
        let f0 = 140.0 + 30.0 * (2.0 * PI * t / 2.5).sin();
        phase += 2.0 * PI * f0 / sr;
        if phase > 2.0 * PI {
            phase -= 2.0 * PI;
        }
        // formants move per syllable (different vowels)
        let k = (t * 4.0).floor();
        let f1 = 450.0 + 250.0 * ((k * 1.7).sin() * 0.5 + 0.5);
        let f2 = 1100.0 + 900.0 * ((k * 2.3).cos() * 0.5 + 0.5);
        let mut s = 0.0;
        let harmonics = (4000.0 / f0) as usize;
        for h in 1..=harmonics {
            let fh = f0 * h as f64;
            let g1 = 1.0 / (1.0 + ((fh - f1) / 120.0).powi(2));
            let g2 = 0.6 / (1.0 + ((fh - f2) / 180.0).powi(2));
            let tilt = 1.0 / h as f64;
            s += (g1 + g2 + 0.05 * tilt) * (phase * h as f64).sin();
        }
        // a little room noise (xorshift, deterministic)
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let noise = (rng >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        let v = env * s * 0.35 + noise * 0.0006;
        out.push((v.clamp(-1.0, 1.0) * 32767.0 * 0.8) as i16);
    }
    out
}

/// Encodes `seconds` of the speech-like signal as Opus packets, one per 20 ms.
pub fn encode_speech(seconds: f64, kbps: u32) -> Result<Vec<Vec<u8>>, SpeechError> {
    let pcm = speech_signal(seconds);
    let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
    enc.set_bitrate(opus::Bitrate::Bits(kbps as i32 * 1000))?;
    enc.set_inband_fec(true)?;
    // unconstrained VBR: like a browser, fewer bits in pauses than in syllables
    enc.set_vbr(true)?;
    enc.set_vbr_constraint(false)?;
    let mut out = Vec::with_capacity(pcm.len() / FRAME_SAMPLES);
    let mut buf = vec![0u8; 1500];
    for chunk in pcm.chunks_exact(FRAME_SAMPLES) {
        let n = enc.encode(chunk, &mut buf)?;
        out.push(buf[..n].to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_has_syllables_and_pauses() {
        let s = speech_signal(2.5);
        let rms = |a: &[i16]| {
            (a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
        };
        // a syllable nucleus (t = 0.125 s) is loud, the phrase pause (t = 2.2 s) is near silent
        let nucleus = rms(&s[5_000..7_000]);
        let pause = rms(&s[105_000..107_000]);
        assert!(nucleus > 1000.0, "nucleus rms {nucleus}");
        assert!(pause < 500.0, "pause rms {pause}");
    }

    #[test]
    fn opus_packets_are_real_and_vary_with_voice() {
        let pkts = encode_speech(2.5, 32).unwrap();
        assert_eq!(pkts.len(), 125);
        // TOC byte: 20 ms frames (config 3/11/15/19/... → frame size code 3 for SILK/CELT 20 ms)
        let toc = pkts[10][0];
        assert_eq!(toc & 0x04, 0, "mono");
        let voiced: usize = pkts[0..100].iter().map(|p| p.len()).sum::<usize>() / 100;
        let pause: usize = pkts[110..125].iter().map(|p| p.len()).sum::<usize>() / 15;
        assert!(voiced > pause, "voiced {voiced} B vs pause {pause} B");
        assert!(voiced > 20 && voiced < 200, "voiced {voiced} B per 20 ms");
    }
}
