//! Symbolic dimensions: integer polynomials over named dims (`batch`, `sequence`), floor
//! divisions that do not divide exactly, and unknowns.
//!
//! A [`Dim`] is kept in a canonical form (a sum of monomials with non-zero integer coefficients,
//! each monomial a sorted product of atoms), so two dims that are equal as expressions compare
//! equal, and the printed form is the same for both. An unknown is a fresh atom with an identity:
//! the second dim of `NonZero`'s output is unknown, but the same unknown wherever that value's
//! shape flows, so a `Transpose` of it still knows its dims are equal to the original's.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// An indivisible factor of a monomial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Atom {
    /// A named dim from the model (`dim_param`).
    Symbol(Arc<str>),
    /// `floor(numerator / divisor)` where the division is not exact; divisor > 1.
    FloorDiv(Box<Dim>, i64),
    /// `min(a, b)` of two dims neither of which is known to be the smaller (a slice of a
    /// fixed-size table by a symbolic length: `min(sequence, 512)`); the pair is sorted.
    Min(Box<Dim>, Box<Dim>),
    /// A dim nothing determines, with an identity (see the module docs).
    Unknown(u64),
}

/// A symbolic integer: a canonical sum of `coefficient * product of atoms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dim {
    /// Monomial (sorted atoms; empty for the constant term) to its non-zero coefficient.
    terms: BTreeMap<Vec<Atom>, i64>,
}

impl Dim {
    pub fn constant(v: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if v != 0 {
            terms.insert(Vec::new(), v);
        }
        Dim { terms }
    }

    pub fn symbol(name: &str) -> Dim {
        Dim::atom(Atom::Symbol(Arc::from(name)))
    }

    pub fn unknown(id: u64) -> Dim {
        Dim::atom(Atom::Unknown(id))
    }

    fn atom(a: Atom) -> Dim {
        let mut terms = BTreeMap::new();
        terms.insert(vec![a], 1);
        Dim { terms }
    }

    /// The value when the dim is a plain number.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// The name when the dim is exactly one named symbol.
    pub fn as_symbol(&self) -> Option<&str> {
        match self.single_monomial() {
            Some(([Atom::Symbol(s)], 1)) => Some(s),
            _ => None,
        }
    }

    /// Does an unknown take part in this dim?
    pub fn has_unknown(&self) -> bool {
        self.terms.keys().flatten().any(|a| match a {
            Atom::Unknown(_) => true,
            Atom::FloorDiv(d, _) => d.has_unknown(),
            Atom::Min(a, b) => a.has_unknown() || b.has_unknown(),
            Atom::Symbol(_) => false,
        })
    }

    /// Is the dim a number or an expression over named symbols only?
    pub fn is_known(&self) -> bool {
        !self.has_unknown()
    }

    fn single_monomial(&self) -> Option<(&[Atom], i64)> {
        match self.terms.iter().next() {
            Some((atoms, &c)) if self.terms.len() == 1 => Some((atoms.as_slice(), c)),
            _ => None,
        }
    }

    fn add_term(&mut self, atoms: Vec<Atom>, c: i64) -> Option<()> {
        let e = self.terms.entry(atoms).or_insert(0);
        *e = e.checked_add(c)?;
        if *e == 0 {
            self.terms.retain(|_, c| *c != 0);
        }
        Some(())
    }

    /// `self + other`, `None` on overflow.
    pub fn add(&self, other: &Dim) -> Option<Dim> {
        let mut out = self.clone();
        for (atoms, &c) in &other.terms {
            out.add_term(atoms.clone(), c)?;
        }
        Some(out)
    }

    pub fn sub(&self, other: &Dim) -> Option<Dim> {
        self.add(&other.scale(-1)?)
    }

    fn scale(&self, k: i64) -> Option<Dim> {
        let mut out = Dim::default();
        for (atoms, &c) in &self.terms {
            out.add_term(atoms.clone(), c.checked_mul(k)?)?;
        }
        Some(out)
    }

    /// `self * other`, `None` on overflow.
    pub fn mul(&self, other: &Dim) -> Option<Dim> {
        let mut out = Dim::default();
        for (a, &ca) in &self.terms {
            for (b, &cb) in &other.terms {
                let mut atoms: Vec<Atom> = a.iter().chain(b).cloned().collect();
                atoms.sort();
                out.add_term(atoms, ca.checked_mul(cb)?)?;
            }
        }
        Some(out)
    }

    /// `floor(self / d)` for a positive constant `d`: exact when every coefficient divides (and
    /// then a polynomial again), else a floor-division atom. `None` when `d <= 0`.
    pub fn floor_div(&self, d: i64) -> Option<Dim> {
        if d <= 0 {
            return None;
        }
        if d == 1 {
            return Some(self.clone());
        }
        if let Some(v) = self.as_const() {
            return Some(Dim::constant(v.div_euclid(d)));
        }
        if self.terms.values().all(|c| c % d == 0) {
            let mut out = Dim::default();
            for (atoms, &c) in &self.terms {
                out.add_term(atoms.clone(), c / d)?;
            }
            return Some(out);
        }
        // pull out whole multiples of the divisor: floor((d*a + r)/d) = a + floor(r/d)
        let mut whole = Dim::default();
        let mut rest = Dim::default();
        for (atoms, &c) in &self.terms {
            let q = c.div_euclid(d);
            if q != 0 {
                whole.add_term(atoms.clone(), q)?;
            }
            rest.add_term(atoms.clone(), c.rem_euclid(d))?;
        }
        if rest.terms.is_empty() {
            return Some(whole);
        }
        if let Some(r) = rest.as_const() {
            // 0 <= r < d: floor(r/d) = 0
            debug_assert!(r < d);
            return Some(whole);
        }
        whole.add(&Dim::atom(Atom::FloorDiv(Box::new(rest), d)))
    }

    /// `ceil(self / d)` for a positive constant `d`.
    pub fn ceil_div(&self, d: i64) -> Option<Dim> {
        self.add(&Dim::constant(d - 1))?.floor_div(d)
    }

    /// `self / other` when it divides exactly as polynomials: `other` a constant or a monomial
    /// that divides every term (`768*batch*seq / (12*batch*seq) = 64`).
    pub fn exact_div(&self, other: &Dim) -> Option<Dim> {
        let (den_atoms, den_c) = match other.as_const() {
            Some(0) => return None,
            Some(c) => (&[][..], c),
            None => other.single_monomial()?,
        };
        let mut out = Dim::default();
        for (atoms, &c) in &self.terms {
            if c % den_c != 0 {
                return None;
            }
            let mut rest = atoms.clone();
            for a in den_atoms {
                let at = rest.iter().position(|x| x == a)?;
                rest.remove(at);
            }
            out.add_term(rest, c / den_c)?;
        }
        Some(out)
    }

    /// The known lower bound 0 of a dim lets `max(self, other)` be decided in a few cases: equal
    /// dims, or one side a constant not above 0 (symbols are sizes, never negative).
    pub fn max_known(&self, other: &Dim) -> Option<Dim> {
        if self == other {
            return Some(self.clone());
        }
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) => Some(Dim::constant(a.max(b))),
            (Some(a), None) if a <= 0 && other.is_size() => Some(other.clone()),
            (None, Some(b)) if b <= 0 && self.is_size() => Some(self.clone()),
            _ => None,
        }
    }

    /// `min(self, other)` of two sizes: decided where `min_known` can, else a `Min` atom.
    pub fn min_of(&self, other: &Dim) -> Dim {
        if let Some(m) = self.min_known(other) {
            return m;
        }
        // one canonical order, constants last: `min(sequence, 512)`
        let key = |d: &Dim| (d.as_const().is_some(), d.clone());
        let (a, b) = if key(self) <= key(other) {
            (self, other)
        } else {
            (other, self)
        };
        Dim::atom(Atom::Min(Box::new(a.clone()), Box::new(b.clone())))
    }

    /// The two sides when this dim is exactly one `min(a, b)`.
    pub fn as_min(&self) -> Option<(&Dim, &Dim)> {
        match self.single_monomial()? {
            ([Atom::Min(a, b)], 1) => Some((a, b)),
            _ => None,
        }
    }

    pub fn min_known(&self, other: &Dim) -> Option<Dim> {
        if self == other {
            return Some(self.clone());
        }
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) => Some(Dim::constant(a.min(b))),
            (Some(a), None) if a <= 0 && other.is_size() => Some(Dim::constant(a)),
            (None, Some(b)) if b <= 0 && self.is_size() => Some(Dim::constant(b)),
            _ => None,
        }
    }

    /// Is the dim certainly non-negative: a sum of non-negative multiples of sizes?
    pub fn is_size(&self) -> bool {
        self.terms.values().all(|&c| c >= 0)
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::constant(v)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Symbol(s) => f.write_str(s),
            Atom::FloorDiv(d, k) => {
                if d.terms.len() > 1 {
                    write!(f, "({d})/{k}")
                } else {
                    write!(f, "{d}/{k}")
                }
            }
            Atom::Min(a, b) => write!(f, "min({a}, {b})"),
            Atom::Unknown(id) => write!(f, "?{id}"),
        }
    }
}

/// The readable form: `batch`, `12*sequence`, `(H - 3)/2 + 1`; `/` is floor division.
impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // variable terms first (most atoms first), the constant last, as people write them
        let mut terms: Vec<(&Vec<Atom>, i64)> = self.terms.iter().map(|(a, &c)| (a, c)).collect();
        terms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (k, (atoms, c)) in terms.into_iter().enumerate() {
            let mag = c.unsigned_abs();
            match (k, c < 0) {
                (0, true) => f.write_str("-")?,
                (0, false) => {}
                (_, true) => f.write_str(" - ")?,
                (_, false) => f.write_str(" + ")?,
            }
            if atoms.is_empty() {
                write!(f, "{mag}")?;
                continue;
            }
            if mag != 1 {
                write!(f, "{mag}*")?;
            }
            for (i, a) in atoms.iter().enumerate() {
                if i > 0 {
                    f.write_str("*")?;
                }
                write!(f, "{a}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> Dim {
        Dim::symbol(n)
    }
    fn c(v: i64) -> Dim {
        Dim::constant(v)
    }

    #[test]
    fn canonical_forms_compare_equal() {
        let a = s("batch").mul(&s("seq")).unwrap().mul(&c(768)).unwrap();
        let b = c(768).mul(&s("seq")).unwrap().mul(&s("batch")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "768*batch*seq");
        assert_eq!(s("n").add(&c(2)).unwrap().sub(&c(2)).unwrap(), s("n"));
        assert_eq!(s("n").sub(&s("n")).unwrap().as_const(), Some(0));
    }

    #[test]
    fn exact_division_by_monomials() {
        let total = s("batch").mul(&s("seq")).unwrap().mul(&c(768)).unwrap();
        let known = s("batch").mul(&s("seq")).unwrap().mul(&c(12)).unwrap();
        assert_eq!(total.exact_div(&known), Some(c(64)));
        assert_eq!(total.exact_div(&c(7)), None);
        assert_eq!(s("a").exact_div(&s("b")), None);
    }

    #[test]
    fn floor_division_keeps_what_it_cannot_divide() {
        // a conv output size: (H - 3)/2 + 1
        let h = s("H");
        let out = h
            .sub(&c(3))
            .unwrap()
            .floor_div(2)
            .unwrap()
            .add(&c(1))
            .unwrap();
        assert_eq!(out.to_string(), "(H + 1)/2 - 1");
        // floor((2H + 2)/2) = H + 1
        assert_eq!(
            h.mul(&c(2)).unwrap().add(&c(2)).unwrap().floor_div(2),
            h.add(&c(1))
        );
        assert_eq!(c(-7).floor_div(2), Some(c(-4)));
        assert_eq!(c(7).ceil_div(2), Some(c(4)));
        assert_eq!(s("x").floor_div(0), None);
    }

    #[test]
    fn unknowns_keep_their_identity() {
        let u = Dim::unknown(3);
        assert_eq!(u, Dim::unknown(3));
        assert_ne!(u, Dim::unknown(4));
        assert!(u.add(&c(1)).unwrap().has_unknown());
        assert!(!s("n").has_unknown());
    }

    #[test]
    fn overflow_is_none() {
        assert_eq!(c(i64::MAX).add(&c(1)), None);
        assert_eq!(c(1 << 40).mul(&c(1 << 40)), None);
    }
}
