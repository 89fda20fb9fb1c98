//! Lock modes and MongoDB's compatibility matrix.
//!
//! Owns: [`LockMode`] (IS, IX, S, X), which pairs are compatible, which held mode covers a
//! request (a recursive acquisition that only counts), which upgrades are allowed, and the names
//! the statistics use (legacy letters r/w/R/W).
//!
//! Invariants: the matrix is symmetric; X conflicts with every mode; a mode covers itself; a mode
//! that covers another is at least as strong (conflicts with a superset of modes).

use std::fmt;

/// A lock mode. The numeric order (IS < IX < S < X) is the order used to pick "the strongest"
/// mode for displays; it is not the covering relation (IX and S do not cover each other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    /// Intent shared: the holder reads below this resource.
    IS = 0,
    /// Intent exclusive: the holder writes below this resource.
    IX = 1,
    /// Shared: the holder reads the whole resource.
    S = 2,
    /// Exclusive: the holder alone uses the resource.
    X = 3,
}

/// Number of lock modes (array sizes indexed by [`LockMode::index`]).
pub const LOCK_MODES: usize = 4;

/// Bit `m` of `CONFLICTS[n]` is set when modes `n` and `m` conflict.
const CONFLICTS: [u8; LOCK_MODES] = [
    // IS conflicts with X.
    1 << 3,
    // IX conflicts with S and X.
    (1 << 2) | (1 << 3),
    // S conflicts with IX and X.
    (1 << 1) | (1 << 3),
    // X conflicts with everything.
    0b1111,
];

impl LockMode {
    /// Every mode, in index order.
    pub const ALL: [LockMode; LOCK_MODES] = [LockMode::IS, LockMode::IX, LockMode::S, LockMode::X];

    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(index: usize) -> LockMode {
        LockMode::ALL[index]
    }

    /// One bit for this mode, to build sets of modes.
    pub const fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The set of modes this mode conflicts with, as bits.
    pub const fn conflict_bits(self) -> u8 {
        CONFLICTS[self as usize]
    }

    /// MongoDB's compatibility matrix.
    pub const fn is_compatible_with(self, other: LockMode) -> bool {
        self.conflict_bits() & other.bit() == 0
    }

    /// True when holding `self` already grants everything `wanted` would: a request for `wanted`
    /// by a holder of `self` only counts (recursion).
    pub const fn covers(self, wanted: LockMode) -> bool {
        // A mode covers another when it conflicts with a superset of what the other conflicts
        // with: X covers all, S covers IS and S, IX covers IS and IX, IS covers IS.
        self.conflict_bits() & wanted.conflict_bits() == wanted.conflict_bits()
    }

    /// Whether a holder of `self` may convert to `wanted` (which it does not cover). MongoDB
    /// allows IS->S, IS->IX, IS->X, IX->X and S->X; S->IX and IX->S are refused because neither
    /// mode covers the other and there is no SIX mode.
    pub const fn can_upgrade_to(self, wanted: LockMode) -> bool {
        !self.covers(wanted) && wanted.covers(self)
    }

    /// The intent mode an ancestor is taken in for a request of `self` below it.
    pub const fn intent(self) -> LockMode {
        match self {
            LockMode::IS | LockMode::S => LockMode::IS,
            LockMode::IX | LockMode::X => LockMode::IX,
        }
    }

    /// True for modes that read (IS, S); false for modes that write (IX, X).
    pub const fn is_read(self) -> bool {
        matches!(self, LockMode::IS | LockMode::S)
    }

    /// The legacy letter used by serverStatus and currentOp: r=IS, w=IX, R=S, W=X.
    pub const fn legacy_letter(self) -> &'static str {
        match self {
            LockMode::IS => "r",
            LockMode::IX => "w",
            LockMode::S => "R",
            LockMode::X => "W",
        }
    }

    /// The name used by lockInfo ("IS", "IX", "S", "X").
    pub const fn name(self) -> &'static str {
        match self {
            LockMode::IS => "IS",
            LockMode::IX => "IX",
            LockMode::S => "S",
            LockMode::X => "X",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// True when `mode` conflicts with any mode in the set `modes` (bits from [`LockMode::bit`]).
pub const fn conflicts_with_any(mode: LockMode, modes: u8) -> bool {
    mode.conflict_bits() & modes != 0
}

#[cfg(test)]
mod tests {
    use super::LockMode::{self, IS, IX, S, X};

    #[test]
    fn full_matrix_is_mongodbs() {
        // Row: requested, column: granted. MongoDB's table (lock_manager_defs.h).
        let expected = [
            (IS, [true, true, true, false]),
            (IX, [true, true, false, false]),
            (S, [true, false, true, false]),
            (X, [false, false, false, false]),
        ];
        for (requested, row) in expected {
            for (granted, compatible) in LockMode::ALL.into_iter().zip(row) {
                assert_eq!(
                    requested.is_compatible_with(granted),
                    compatible,
                    "{requested} vs {granted}"
                );
                assert_eq!(
                    granted.is_compatible_with(requested),
                    compatible,
                    "symmetric"
                );
            }
        }
    }

    #[test]
    fn covering_and_upgrades() {
        let covers = |held: LockMode, wanted: LockMode| held.covers(wanted);
        assert!(covers(X, IS) && covers(X, IX) && covers(X, S) && covers(X, X));
        assert!(covers(S, IS) && covers(S, S) && !covers(S, IX) && !covers(S, X));
        assert!(covers(IX, IS) && covers(IX, IX) && !covers(IX, S) && !covers(IX, X));
        assert!(covers(IS, IS) && !covers(IS, IX) && !covers(IS, S) && !covers(IS, X));

        let allowed: Vec<(LockMode, LockMode)> = LockMode::ALL
            .into_iter()
            .flat_map(|from| LockMode::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_upgrade_to(*to))
            .collect();
        assert_eq!(allowed, vec![(IS, IX), (IS, S), (IS, X), (IX, X), (S, X)]);
        assert!(!S.can_upgrade_to(IX), "S->IX is refused");
        assert!(!IX.can_upgrade_to(S), "IX->S is refused");
    }

    #[test]
    fn letters_and_intents() {
        let letters: Vec<&str> = LockMode::ALL.iter().map(|m| m.legacy_letter()).collect();
        assert_eq!(letters, ["r", "w", "R", "W"]);
        assert_eq!(S.intent(), IS);
        assert_eq!(X.intent(), IX);
        assert!(IS.is_read() && S.is_read() && !IX.is_read() && !X.is_read());
    }
}
