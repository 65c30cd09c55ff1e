//! Byte-level mutations of a well-formed request, aimed at what breaks decoders: lengths and counts at their
//! extremes, varints that never end, truncation, flipped bits, spliced bytes.

/// xorshift64*: deterministic for a seed, so a CI run is reproducible and a crash can be replayed by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values that sit on the edges of Kafka's field types: INT16/INT32 lengths and counts, nulls (-1), negatives,
/// and unsigned varints that claim the most or never terminate.
const INTERESTING: &[&[u8]] = &[
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x80, 0x00, 0x00, 0x00],
    &[0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xfe],
    &[0x00, 0x00, 0x10, 0x00],
    &[0x7f, 0xff],
    &[0x80, 0x00],
    &[0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80],
    &[0xff, 0xff, 0x03],
    &[0x00],
    &[0x01],
    &[0x7f],
    &[0xff],
];

/// Mutates `body` (the request after its header) in place with one to four mutations.
pub fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = body.len();
        match rng.below(8) {
            // An interesting value written over whatever field happens to sit there.
            0..=2 => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let at = rng.below(len + 1);
                for (i, b) in v.iter().enumerate() {
                    match body.get_mut(at + i) {
                        Some(slot) => *slot = *b,
                        None => body.push(*b),
                    }
                }
            }
            3 if len > 0 => {
                let at = rng.below(len);
                body[at] ^= 1 << rng.below(8);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                body[at] = rng.next() as u8;
            }
            5 => body.truncate(rng.below(len + 1)),
            // A copy of one part of the message inserted elsewhere: repeated structures, shifted fields.
            6 if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(64));
                let chunk = body[from..from + n].to_vec();
                let at = rng.below(len + 1);
                body.splice(at..at, chunk);
            }
            _ => {
                let n = 1 + rng.below(16);
                for _ in 0..n {
                    body.push(rng.next() as u8);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mutations() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let (mut x, mut y) = (vec![1, 2, 3, 4, 5, 6, 7, 8], vec![1, 2, 3, 4, 5, 6, 7, 8]);
        for _ in 0..100 {
            mutate(&mut a, &mut x);
            mutate(&mut b, &mut y);
        }
        assert_eq!(x, y);
    }
}
