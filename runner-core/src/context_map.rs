//! The persistent map behind a [`Context`](crate::Context): variable id -> value.
//!
//! Copying a context must be O(1) whatever it holds (every spawn copies one), and setting a
//! variable must leave the copies alone. A context with a handful of variables (the common case)
//! is one shared slice, copied on write and scanned linearly: one pointer away, no hashing, faster
//! than any tree at that size. Past `SMALL` variables it becomes a hash array mapped trie, as
//! CPython's `contextvars` uses: 32-way branches indexed by 5 bits of the key's hash, shared
//! between copies, so that set, get and remove touch O(log n) nodes and copy only the path they
//! change. n nested copies that each add a variable take O(n log n) memory, not O(n²).
//!
//! Keys are variable ids, unique in the process. The hash multiplies by an odd constant, a
//! bijection on `u64`: two keys never share a hash, so they part at some level and the trie needs
//! no collision nodes (13 levels of 5 bits cover all 64 bits).

use std::any::Any;
use std::sync::Arc;

use crate::error::catch_quietly;

/// A variable's value.
pub(crate) type Value = Arc<dyn Any + Send + Sync>;

/// Up to this many variables, a context is a flat slice.
const SMALL: usize = 8;

/// Bits of the hash used per trie level.
const BITS: u32 = 5;

/// See the module documentation. One thin pointer, so that copying and swapping a context
/// costs what it did when a context was a single slice.
#[derive(Clone, Default)]
pub(crate) struct ContextMap(Option<Arc<Node>>);

enum Node {
    Small(Small),
    Trie { len: usize, root: Branch },
}

/// Up to `SMALL` entries, inline in the node (one pointer away from the context), scanned
/// linearly; `entries[..len]` are all `Some`.
#[derive(Clone)]
struct Small {
    len: usize,
    entries: [Option<(u64, Value)>; SMALL],
}

impl Small {
    fn new() -> Small {
        Small {
            len: 0,
            entries: std::array::from_fn(|_| None),
        }
    }

    fn push(&mut self, key: u64, value: Value) {
        self.entries[self.len] = Some((key, value));
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &(u64, Value)> {
        self.entries[..self.len].iter().flatten()
    }
}

/// A value's destructor is user code, run wherever a context is dropped or changed: at a task's
/// end, at `reset`, at thread exit. Each value is dropped on its own, and a panic in its
/// destructor is contained (as Python ignores an exception raised in `__del__`), so that a second
/// panicking value in the same map cannot abort the process.
impl Drop for Small {
    fn drop(&mut self) {
        for entry in &mut self.entries {
            if let Some(entry) = entry.take() {
                catch_quietly(move || drop(entry));
            }
        }
    }
}

#[derive(Clone)]
struct Branch {
    /// Bit `i` is set when the branch has a child for index `i`.
    bitmap: u32,
    /// The children, in index order.
    children: Box<[Child]>,
}

#[derive(Clone)]
enum Child {
    Leaf(u64, Value),
    Branch(Arc<Branch>),
}

/// As for [`Small`]: each child on its own.
impl Drop for Branch {
    fn drop(&mut self) {
        for child in std::mem::take(&mut self.children).into_vec() {
            catch_quietly(move || drop(child));
        }
    }
}

fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The bit, in a branch's bitmap, of the child for `hash` at the level that starts at `shift`.
fn bit_of(hash: u64, shift: u32) -> u32 {
    1 << ((hash >> shift) & 31)
}

/// Where the child for `bit` sits in `children`.
fn position(bitmap: u32, bit: u32) -> usize {
    (bitmap & (bit - 1)).count_ones() as usize
}

impl ContextMap {
    /// An empty map.
    pub(crate) const fn new() -> ContextMap {
        ContextMap(None)
    }

    /// The number of variables set.
    pub(crate) fn len(&self) -> usize {
        match self.0.as_deref() {
            None => 0,
            Some(Node::Small(small)) => small.len,
            Some(Node::Trie { len, .. }) => *len,
        }
    }

    /// The value of `key`, if set.
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&Value> {
        match self.0.as_deref()? {
            Node::Small(small) => small.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            Node::Trie { root, .. } => root.get(hash(key), key),
        }
    }

    /// Set `key` to `value`; the previous value.
    pub(crate) fn insert(&mut self, key: u64, value: Value) -> Option<Value> {
        let old = self.get(key).cloned();
        let node = match self.0.as_deref() {
            None => {
                let mut small = Small::new();
                small.push(key, value);
                Node::Small(small)
            }
            Some(Node::Small(small)) if old.is_some() || small.len < SMALL => {
                let mut copy = Small::new();
                for (k, v) in small.iter().filter(|(k, _)| *k != key) {
                    copy.push(*k, v.clone());
                }
                copy.push(key, value);
                Node::Small(copy)
            }
            Some(Node::Small(small)) => {
                let mut root = Branch::empty();
                for (k, v) in small.iter().cloned().chain([(key, value)]) {
                    root = root.insert(hash(k), k, v, 0);
                }
                Node::Trie {
                    len: small.len + 1,
                    root,
                }
            }
            Some(Node::Trie { len, root }) => Node::Trie {
                len: len + usize::from(old.is_none()),
                root: root.insert(hash(key), key, value, 0),
            },
        };
        self.0 = Some(Arc::new(node));
        old
    }

    /// Unset `key`.
    pub(crate) fn remove(&mut self, key: u64) {
        if self.get(key).is_none() {
            return;
        }
        let node = match self.0.as_deref() {
            None => None,
            Some(Node::Small(small)) => {
                let mut copy = Small::new();
                for (k, v) in small.iter().filter(|(k, _)| *k != key) {
                    copy.push(*k, v.clone());
                }
                (copy.len > 0).then_some(Node::Small(copy))
            }
            Some(Node::Trie { len, root }) => match root.remove(hash(key), key, 0) {
                Removed::Gone | Removed::NotFound => None,
                Removed::Leaf(k, v) => {
                    let mut small = Small::new();
                    small.push(k, v);
                    Some(Node::Small(small))
                }
                Removed::Branch(root) => Some(Node::Trie { len: len - 1, root }),
            },
        };
        self.0 = node.map(Arc::new);
    }
}

/// What removing a key left of a branch.
enum Removed {
    NotFound,
    /// Nothing.
    Gone,
    /// A single leaf: the parent keeps it in place of the branch.
    Leaf(u64, Value),
    Branch(Branch),
}

impl Branch {
    fn empty() -> Branch {
        Branch {
            bitmap: 0,
            children: Box::new([]),
        }
    }

    fn get(&self, hash: u64, key: u64) -> Option<&Value> {
        let mut branch = self;
        let mut shift = 0;
        loop {
            let bit = bit_of(hash, shift);
            if branch.bitmap & bit == 0 {
                return None;
            }
            match &branch.children[position(branch.bitmap, bit)] {
                Child::Leaf(k, v) => return (*k == key).then_some(v),
                Child::Branch(next) => {
                    branch = next;
                    shift += BITS;
                }
            }
        }
    }

    /// A copy of this branch with `key` set; only the path to it is copied.
    fn insert(&self, hash: u64, key: u64, value: Value, shift: u32) -> Branch {
        let bit = bit_of(hash, shift);
        let pos = position(self.bitmap, bit);
        let mut children = self.children.to_vec();
        if self.bitmap & bit == 0 {
            children.insert(pos, Child::Leaf(key, value));
            return Branch {
                bitmap: self.bitmap | bit,
                children: children.into(),
            };
        }
        children[pos] = match &self.children[pos] {
            Child::Leaf(k, _) if *k == key => Child::Leaf(key, value),
            Child::Leaf(k, v) => {
                let pair = Branch::empty()
                    .insert(self::hash(*k), *k, v.clone(), shift + BITS)
                    .insert(hash, key, value, shift + BITS);
                Child::Branch(Arc::new(pair))
            }
            Child::Branch(next) => {
                Child::Branch(Arc::new(next.insert(hash, key, value, shift + BITS)))
            }
        };
        Branch {
            bitmap: self.bitmap,
            children: children.into(),
        }
    }

    /// A copy of this branch without `key`, collapsed where a single leaf is left.
    fn remove(&self, hash: u64, key: u64, shift: u32) -> Removed {
        let bit = bit_of(hash, shift);
        if self.bitmap & bit == 0 {
            return Removed::NotFound;
        }
        let pos = position(self.bitmap, bit);
        let replacement = match &self.children[pos] {
            Child::Leaf(k, _) if *k == key => None,
            Child::Leaf(..) => return Removed::NotFound,
            Child::Branch(next) => match next.remove(hash, key, shift + BITS) {
                Removed::NotFound => return Removed::NotFound,
                Removed::Gone => None,
                Removed::Leaf(k, v) => Some(Child::Leaf(k, v)),
                Removed::Branch(b) => Some(Child::Branch(Arc::new(b))),
            },
        };
        let mut children = self.children.to_vec();
        let bitmap = match replacement {
            Some(child) => {
                children[pos] = child;
                self.bitmap
            }
            None => {
                children.remove(pos);
                self.bitmap & !bit
            }
        };
        match children.as_slice() {
            [] => Removed::Gone,
            [Child::Leaf(k, v)] => Removed::Leaf(*k, v.clone()),
            _ => Removed::Branch(Branch {
                bitmap,
                children: children.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn value(n: u64) -> Value {
        Arc::new(n)
    }

    fn read(map: &ContextMap, key: u64) -> Option<u64> {
        map.get(key).and_then(|v| v.downcast_ref::<u64>().copied())
    }

    /// Against a `HashMap`, through sets, overwrites and removes, across the small/trie switch.
    #[test]
    fn behaves_like_a_map() {
        let mut map = ContextMap::default();
        let mut model = HashMap::new();
        let mut seed = 7_u64;
        for step in 0..20_000_u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (seed >> 33) % 3_000;
            if seed % 5 == 0 {
                map.remove(key);
                model.remove(&key);
            } else {
                let old = map.insert(key, value(step));
                let expected = model.insert(key, step);
                assert_eq!(old.and_then(|v| v.downcast_ref::<u64>().copied()), expected);
            }
            assert_eq!(map.len(), model.len());
        }
        for key in 0..3_000 {
            assert_eq!(read(&map, key), model.get(&key).copied(), "key {key}");
        }
        for key in model.keys().copied().collect::<Vec<_>>() {
            map.remove(key);
        }
        assert_eq!(map.len(), 0);
        assert!(map.0.is_none());
    }

    /// A copy does not see later changes, and the original does not see the copy's.
    #[test]
    fn copies_are_independent() {
        let mut a = ContextMap::default();
        for k in 0..100 {
            a.insert(k, value(k));
        }
        let mut b = a.clone();
        b.insert(5, value(500));
        b.insert(1_000, value(1_000));
        b.remove(7);
        assert_eq!(
            (read(&a, 5), read(&a, 1_000), read(&a, 7)),
            (Some(5), None, Some(7))
        );
        assert_eq!(
            (read(&b, 5), read(&b, 1_000), read(&b, 7)),
            (Some(500), Some(1_000), None)
        );
        assert_eq!((a.len(), b.len()), (100, 100));
    }

    /// Keys that agree on their first levels' bits still part further down.
    #[test]
    fn keys_sharing_low_hash_bits_are_kept_apart() {
        let mut map = ContextMap::default();
        // Multiplying by the inverse of the odd constant makes keys whose hashes differ only in
        // high bits.
        let inverse = {
            let c: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut x = c;
            for _ in 0..6 {
                x = x.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(x)));
            }
            x
        };
        let keys: Vec<u64> = (0..40_u64)
            .map(|i| (i << 58).wrapping_mul(inverse))
            .collect();
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(hash(k), (i as u64) << 58);
            map.insert(k, value(i as u64));
        }
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(read(&map, k), Some(i as u64));
        }
        for &k in &keys[..39] {
            map.remove(k);
        }
        assert_eq!(read(&map, keys[39]), Some(39));
        assert_eq!(map.len(), 1);
    }
}
