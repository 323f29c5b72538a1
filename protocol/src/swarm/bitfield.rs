//! A fixed-size set of piece numbers, in the wire layout of `PieceMap` (piece 0 in the
//! high bit of byte 0).

/// A set of pieces of one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Self {
        Bitfield {
            bits: vec![0; len.div_ceil(8) as usize],
            len,
            ones: 0,
        }
    }

    /// From a `PieceMap` payload; `None` if the sizes disagree or spare bits are set.
    pub fn from_wire(len: u32, bits: &[u8]) -> Option<Self> {
        if bits.len() != len.div_ceil(8) as usize {
            return None;
        }
        let spare = (8 - len % 8) % 8;
        if spare > 0 && bits.last().is_some_and(|b| b & ((1u8 << spare) - 1) != 0) {
            return None;
        }
        let ones = bits.iter().map(|b| b.count_ones()).sum();
        Some(Bitfield {
            bits: bits.to_vec(),
            len,
            ones,
        })
    }

    /// The `PieceMap` payload bytes.
    pub fn as_wire(&self) -> &[u8] {
        &self.bits
    }

    /// Number of pieces the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set ranges over no pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces in the set.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every piece is in the set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `i` is in the set (false past the end).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Adds piece `i`; returns whether it was new. `i` must be below `len`.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Whether some piece is in `self` and not in `other` (sets of the same release).
    pub fn has_any_not_in(&self, other: &Bitfield) -> bool {
        self.bits.iter().zip(&other.bits).any(|(a, b)| a & !b != 0)
    }

    /// The pieces in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|i| self.get(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_layout_and_counts() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0) && b.set(2) && b.set(9));
        assert!(!b.set(2) && !b.set(10));
        assert_eq!(b.as_wire(), &[0b1010_0000, 0b0100_0000]);
        assert_eq!(b.count(), 3);
        assert_eq!(Bitfield::from_wire(10, b.as_wire()), Some(b.clone()));
        assert_eq!(Bitfield::from_wire(10, &[0, 1]), None);
        assert_eq!(Bitfield::from_wire(8, &[0, 0]), None);
        assert!(Bitfield::from_wire(9, &[0, 0]).is_some());
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 2, 9]);
        let mut c = Bitfield::new(10);
        assert!(b.has_any_not_in(&c) && !c.has_any_not_in(&b));
        c.set(0);
        c.set(2);
        c.set(9);
        assert!(!b.has_any_not_in(&c));
    }
}
