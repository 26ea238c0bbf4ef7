//! Roaring-bitmap audience index: one bitmap per tag, one per status code, plus `all`.
//!
//! Memory: there is deliberately **no reverse map** (contact → tags). At 10M contacts a
//! reverse map costs hundreds of MB, while the bitmaps alone are a few bytes per membership.
//! The price is that replacing a contact touches every tag bitmap: [`AudienceIndex::upsert`]
//! does one `remove` per tag bitmap, and [`AudienceIndex::upsert_many`] amortises this by
//! subtracting the whole batch (as a bitmap) from each tag/status bitmap once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use roaring::{MultiOps, RoaringBitmap};

use crate::error::{Error, Result};
use crate::json::{parse_string_array_at, parse_string_array_into, validate_utf8};

/// Contact identifier.
pub type ContactId = u32;
/// Contact status code (small int, 0..=255).
pub type Status = u8;

/// Audience selection.
///
/// `base` = union of the `statuses` bitmaps (`None` = all contacts); if `any_tags` is
/// non-empty, `base ∩= ⋃ any_tags`; for each of `all_tags`, `base ∩= tag` (an unknown tag
/// empties the result); finally `base -= ⋃ none_tags`. Unknown tags in `any_tags` and
/// `none_tags` contribute nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Contacts having at least one of these tags.
    pub any_tags: Vec<String>,
    /// Contacts having every one of these tags.
    pub all_tags: Vec<String>,
    /// Contacts having none of these tags.
    pub none_tags: Vec<String>,
    /// Contacts whose status is one of these (`None` = any status).
    pub statuses: Option<Vec<Status>>,
}

/// The index.
#[derive(Debug, Clone, Default)]
pub struct AudienceIndex {
    all: RoaringBitmap,
    by_status: BTreeMap<Status, RoaringBitmap>,
    by_tag: HashMap<String, RoaringBitmap>,
}

impl AudienceIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of contacts.
    pub fn len(&self) -> u64 {
        self.all.len()
    }

    /// Whether the index has no contacts.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Whether `contact` is indexed.
    pub fn contains(&self, contact: ContactId) -> bool {
        self.all.contains(contact)
    }

    /// Insert or replace `contact` with the given status and tag set.
    pub fn upsert<S: AsRef<str>>(&mut self, contact: ContactId, status: Status, tags: &[S]) {
        self.remove(contact);
        self.all.insert(contact);
        self.by_status.entry(status).or_default().insert(contact);
        for tag in tags {
            let tag = tag.as_ref();
            match self.by_tag.get_mut(tag) {
                Some(bm) => {
                    bm.insert(contact);
                }
                None => {
                    self.by_tag
                        .insert(tag.to_owned(), RoaringBitmap::from_iter([contact]));
                }
            }
        }
    }

    /// Batch upsert: `contacts[i]` gets `statuses[i]` and `tags[i]`. When a contact appears
    /// more than once, the last occurrence wins (as with sequential [`AudienceIndex::upsert`]).
    pub fn upsert_many<S: AsRef<str>>(
        &mut self,
        contacts: &[ContactId],
        statuses: &[Status],
        tags: &[Vec<S>],
    ) -> Result<()> {
        if contacts.len() != statuses.len() || contacts.len() != tags.len() {
            return Err(Error::Audience(format!(
                "upsert_many: length mismatch (contacts={}, statuses={}, tags={})",
                contacts.len(),
                statuses.len(),
                tags.len()
            )));
        }
        let mut interned = Interned::with_rows(tags.len());
        for row in tags {
            for tag in row {
                interned.push(Cow::Borrowed(tag.as_ref()));
            }
            interned.end_row();
        }
        self.upsert_batch(contacts, statuses, &interned);
        Ok(())
    }

    /// Batch upsert from packed storage columns, the form one SQL query can return for a
    /// whole batch (SQLite's `group_concat`): `contacts` and `statuses` are decimal numbers
    /// separated by `,`, and `tags_json` holds each row's JSON array of strings, one after the
    /// other (JSON whitespace, e.g. a newline, between them). Empty inputs are zero rows.
    /// Everything is validated (numbers, counts, JSON) before the index changes.
    pub fn upsert_packed(
        &mut self,
        contacts: &[u8],
        statuses: &[u8],
        tags_json: &[u8],
    ) -> Result<()> {
        let ids: Vec<ContactId> = parse_decimals(contacts, "contacts")?;
        let codes: Vec<Status> = parse_decimals(statuses, "statuses")?;
        let text = validate_utf8(tags_json)
            .map_err(|e| Error::Audience(format!("upsert_packed: tags_json: {e}")))?;
        let bytes = text.as_bytes();
        let mut interned = Interned::with_rows(ids.len());
        let mut row = Vec::new();
        let mut pos = 0;
        loop {
            while bytes
                .get(pos)
                .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                pos += 1;
            }
            if pos == bytes.len() {
                break;
            }
            pos = parse_string_array_at(text, pos, &mut row).map_err(|e| {
                Error::Audience(format!(
                    "upsert_packed: tags_json row {}: {e}",
                    interned.rows()
                ))
            })?;
            for tag in row.drain(..) {
                interned.push(tag);
            }
            interned.end_row();
        }
        let rows = interned.rows();
        if ids.len() != codes.len() || ids.len() != rows {
            return Err(Error::Audience(format!(
                "upsert_packed: count mismatch (contacts={}, statuses={}, tags_json={rows})",
                ids.len(),
                codes.len(),
            )));
        }
        self.upsert_batch(&ids, &codes, &interned);
        Ok(())
    }

    /// The batch upsert of validated, equal-length inputs.
    fn upsert_batch(&mut self, contacts: &[ContactId], statuses: &[Status], tags: &Interned<'_>) {
        if contacts.is_empty() {
            return;
        }
        // A strictly increasing batch (e.g. a bulk load in id order) has no repeats.
        let unique = contacts.windows(2).all(|w| w[0] < w[1]);
        let batch = if unique {
            RoaringBitmap::from_sorted_iter(contacts.iter().copied()).expect("strictly increasing")
        } else {
            contacts.iter().copied().collect()
        };

        // Detach every batch contact from its old status and tags, one bitmap op per bitmap.
        if !self.all.is_disjoint(&batch) {
            self.by_status.retain(|_, bm| {
                *bm -= &batch;
                !bm.is_empty()
            });
            self.by_tag.retain(|_, bm| {
                *bm -= &batch;
                !bm.is_empty()
            });
        }
        self.all |= &batch;

        // New memberships by status code and by tag id. Without repeats, in order (so each
        // list is sorted); with repeats, backwards so the last occurrence of a contact wins.
        let mut by_status: Vec<Vec<ContactId>> = vec![Vec::new(); 256];
        let mut by_tag: Vec<Vec<ContactId>> = vec![Vec::new(); tags.names.len()];
        let mut add = |i: usize| {
            let contact = contacts[i];
            by_status[usize::from(statuses[i])].push(contact);
            for &t in tags.row(i) {
                by_tag[t as usize].push(contact);
            }
        };
        if unique {
            (0..contacts.len()).for_each(&mut add);
        } else {
            let mut seen = RoaringBitmap::new();
            for i in (0..contacts.len()).rev() {
                if seen.insert(contacts[i]) {
                    add(i);
                }
            }
        }
        for (status, members) in by_status.into_iter().enumerate() {
            if !members.is_empty() {
                let status = Status::try_from(status).unwrap_or(Status::MAX);
                *self.by_status.entry(status).or_default() |= sorted_bitmap(members);
            }
        }
        for (name, members) in tags.names.iter().zip(by_tag) {
            if members.is_empty() {
                continue;
            }
            let add = sorted_bitmap(members);
            match self.by_tag.get_mut(name.as_ref()) {
                Some(bm) => *bm |= add,
                None => {
                    self.by_tag.insert(name.to_string(), add);
                }
            }
        }
    }

    /// Batch upsert from raw storage columns: `contacts` is little-endian `u32`s, `statuses`
    /// one byte per contact and `tags_json[i]` the JSON array of strings stored for contact
    /// `i`. Everything is validated (lengths, JSON) before the index changes.
    pub fn upsert_raw<B: AsRef<[u8]>>(
        &mut self,
        contacts: &[u8],
        statuses: &[Status],
        tags_json: &[B],
    ) -> Result<()> {
        if !contacts.len().is_multiple_of(4) {
            return Err(Error::Audience(format!(
                "upsert_raw: contacts is {} bytes, not a multiple of 4",
                contacts.len()
            )));
        }
        let ids: Vec<ContactId> = contacts
            .chunks_exact(4)
            .map(|b| ContactId::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if ids.len() != statuses.len() || ids.len() != tags_json.len() {
            return Err(Error::Audience(format!(
                "upsert_raw: length mismatch (contacts={}, statuses={}, tags_json={})",
                ids.len(),
                statuses.len(),
                tags_json.len()
            )));
        }
        let mut interned = Interned::with_rows(ids.len());
        let mut row = Vec::new();
        for (i, json) in tags_json.iter().enumerate() {
            parse_string_array_into(json.as_ref(), &mut row)
                .map_err(|e| Error::Audience(format!("upsert_raw: tags_json[{i}]: {e}")))?;
            for tag in row.drain(..) {
                interned.push(tag);
            }
            interned.end_row();
        }
        self.upsert_batch(&ids, statuses, &interned);
        Ok(())
    }

    /// Remove `contact`; returns whether it was present.
    pub fn remove(&mut self, contact: ContactId) -> bool {
        if !self.all.remove(contact) {
            return false;
        }
        let emptied_status = self
            .by_status
            .iter_mut()
            .find_map(|(status, bm)| (bm.remove(contact) && bm.is_empty()).then_some(*status));
        if let Some(status) = emptied_status {
            self.by_status.remove(&status);
        }
        self.by_tag.retain(|_, bm| {
            bm.remove(contact);
            !bm.is_empty()
        });
        true
    }

    /// Tags that currently have at least one contact, sorted.
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self.by_tag.keys().cloned().collect();
        tags.sort_unstable();
        tags
    }

    /// The bitmap of a tag, if any contact has it.
    pub fn tag_bitmap(&self, tag: &str) -> Option<&RoaringBitmap> {
        self.by_tag.get(tag)
    }

    /// The bitmap of a status, if any contact has it.
    pub fn status_bitmap(&self, status: Status) -> Option<&RoaringBitmap> {
        self.by_status.get(&status)
    }

    /// The bitmap of all contacts.
    pub fn all(&self) -> &RoaringBitmap {
        &self.all
    }

    /// Number of contacts matching `q`, avoiding materialisation for simple queries.
    pub fn count(&self, q: &Query) -> u64 {
        if q.all_tags.is_empty() && q.none_tags.is_empty() {
            let status = match q.statuses.as_deref() {
                None => Some(None),
                Some([s]) => Some(Some(self.by_status.get(s))),
                Some(_) => None,
            };
            let tag = match q.any_tags.as_slice() {
                [] => Some(None),
                [t] => Some(Some(self.by_tag.get(t))),
                _ => None,
            };
            match (status, tag) {
                (Some(None), Some(None)) => return self.all.len(),
                (Some(None), Some(Some(t))) => return t.map_or(0, RoaringBitmap::len),
                (Some(Some(s)), Some(None)) => return s.map_or(0, RoaringBitmap::len),
                (Some(Some(s)), Some(Some(t))) => {
                    return match (s, t) {
                        (Some(s), Some(t)) => s.intersection_len(t),
                        _ => 0,
                    }
                }
                _ => {}
            }
        }
        self.query(q).len()
    }

    /// Contacts matching `q`.
    pub fn query(&self, q: &Query) -> RoaringBitmap {
        let tag = |t: &String| self.by_tag.get(t);
        let any_union = || q.any_tags.iter().filter_map(tag).union();
        let status_union = |s: &[Status]| s.iter().filter_map(|s| self.by_status.get(s)).union();

        let mut base = match (q.statuses.as_deref(), q.any_tags.is_empty()) {
            (None, true) => match q.all_tags.first() {
                // Start from the first required tag instead of cloning `all`.
                Some(first) => match tag(first) {
                    Some(bm) => bm.clone(),
                    None => return RoaringBitmap::new(),
                },
                None => self.all.clone(),
            },
            (None, false) => any_union(),
            (Some(s), true) => status_union(s),
            (Some(s), false) => {
                let mut b = status_union(s);
                if !b.is_empty() {
                    b &= any_union();
                }
                b
            }
        };
        for t in &q.all_tags {
            if base.is_empty() {
                return base;
            }
            match tag(t) {
                Some(bm) => base &= bm,
                None => return RoaringBitmap::new(),
            }
        }
        for t in &q.none_tags {
            if base.is_empty() {
                return base;
            }
            if let Some(bm) = tag(t) {
                base -= bm;
            }
        }
        base
    }
}

/// The tags of a batch as small ids (a bulk load has millions of memberships of a few
/// dozen tags): row `i`'s ids are `flat[ends[i]..ends[i + 1]]`, tag `id` is `names[id]`.
struct Interned<'a> {
    ids: HashMap<Cow<'a, str>, u32, BuildFnv>,
    names: Vec<Cow<'a, str>>,
    flat: Vec<u32>,
    ends: Vec<usize>,
}

impl<'a> Interned<'a> {
    fn with_rows(rows: usize) -> Self {
        let mut ends = Vec::with_capacity(rows + 1);
        ends.push(0);
        Interned {
            ids: HashMap::default(),
            names: Vec::new(),
            flat: Vec::with_capacity(rows * 3),
            ends,
        }
    }

    fn push(&mut self, tag: Cow<'a, str>) {
        let id = match self.ids.get(tag.as_ref()) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
                self.names.push(tag.clone());
                self.ids.insert(tag, id);
                id
            }
        };
        self.flat.push(id);
    }

    fn end_row(&mut self) {
        self.ends.push(self.flat.len());
    }

    fn rows(&self) -> usize {
        self.ends.len() - 1
    }

    fn row(&self, i: usize) -> &[u32] {
        &self.flat[self.ends[i]..self.ends[i + 1]]
    }
}

/// FNV-1a: tags are short strings from a small set, hashed once per membership in a bulk
/// load; SipHash's DoS resistance buys nothing for a map that lives for one call.
#[derive(Default, Clone, Copy)]
struct BuildFnv;

struct Fnv(u64);

impl std::hash::BuildHasher for BuildFnv {
    type Hasher = Fnv;

    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Decimal numbers separated by `,` (empty input: none).
fn parse_decimals<T: TryFrom<u64>>(text: &[u8], what: &str) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(text.len() / 4);
    if text.is_empty() {
        return Ok(out);
    }
    let bad = |at: usize| {
        Error::Audience(format!(
            "upsert_packed: {what}: expected a decimal number at byte {at}"
        ))
    };
    let mut at = 0;
    for field in text.split(|&b| b == b',') {
        let ok = !field.is_empty() && field.len() <= 10 && field.iter().all(u8::is_ascii_digit);
        if !ok {
            return Err(bad(at));
        }
        let n = field
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        out.push(T::try_from(n).map_err(|_| bad(at))?);
        at += field.len() + 1;
    }
    Ok(out)
}

fn sorted_bitmap(mut ids: Vec<ContactId>) -> RoaringBitmap {
    ids.sort_unstable();
    ids.dedup();
    RoaringBitmap::from_sorted_iter(ids).expect("ids are sorted and deduplicated")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(any: &[&str], all: &[&str], none: &[&str], statuses: Option<&[u8]>) -> Query {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Query {
            any_tags: v(any),
            all_tags: v(all),
            none_tags: v(none),
            statuses: statuses.map(<[u8]>::to_vec),
        }
    }

    fn ids(bm: &RoaringBitmap) -> Vec<u32> {
        bm.iter().collect()
    }

    fn sample() -> AudienceIndex {
        let mut ix = AudienceIndex::new();
        ix.upsert(1, 0, &["a", "b"]);
        ix.upsert(2, 0, &["a"]);
        ix.upsert(3, 1, &["b", "c"]);
        ix.upsert(4, 2, &[] as &[&str]);
        ix.upsert(u32::MAX, 1, &["a", "c"]);
        ix
    }

    fn check(ix: &AudienceIndex, query: &Query, expected: &[u32]) {
        assert_eq!(ids(&ix.query(query)), expected, "{query:?}");
        assert_eq!(ix.count(query), expected.len() as u64, "{query:?}");
    }

    #[test]
    fn basic_membership() {
        let ix = sample();
        assert_eq!(ix.len(), 5);
        assert!(ix.contains(4) && ix.contains(u32::MAX) && !ix.contains(5));
        assert_eq!(ix.tags(), ["a", "b", "c"]);
    }

    #[test]
    fn queries() {
        let ix = sample();
        let m = u32::MAX;
        check(&ix, &Query::default(), &[1, 2, 3, 4, m]);
        check(&ix, &q(&["a"], &[], &[], None), &[1, 2, m]);
        check(&ix, &q(&["a", "c"], &[], &[], None), &[1, 2, 3, m]);
        check(&ix, &q(&["zzz"], &[], &[], None), &[]);
        check(&ix, &q(&["a", "zzz"], &[], &[], None), &[1, 2, m]);
        check(&ix, &q(&[], &["a", "b"], &[], None), &[1]);
        check(&ix, &q(&[], &["a", "zzz"], &[], None), &[]);
        check(&ix, &q(&[], &["zzz"], &[], None), &[]);
        check(&ix, &q(&[], &[], &["a"], None), &[3, 4]);
        check(&ix, &q(&[], &[], &["zzz"], None), &[1, 2, 3, 4, m]);
        check(&ix, &q(&[], &[], &[], Some(&[0])), &[1, 2]);
        check(&ix, &q(&[], &[], &[], Some(&[0, 2])), &[1, 2, 4]);
        check(&ix, &q(&[], &[], &[], Some(&[9])), &[]);
        check(&ix, &q(&[], &[], &[], Some(&[])), &[]);
        check(&ix, &q(&["a"], &[], &[], Some(&[1])), &[m]);
        check(&ix, &q(&["a"], &[], &[], Some(&[9])), &[]);
        check(&ix, &q(&["c"], &[], &[], Some(&[1, 1])), &[3, m]);
        check(
            &ix,
            &q(&["a", "b"], &["c"], &["zzz"], Some(&[1, 0])),
            &[3, m],
        );
        check(&ix, &q(&["a", "b"], &[], &["c"], None), &[1, 2]);
    }

    #[test]
    fn upsert_replaces_status_and_tags() {
        let mut ix = sample();
        ix.upsert(3, 0, &["a"]);
        assert_eq!(ix.tags(), ["a", "b", "c"]);
        check(&ix, &q(&["b"], &[], &[], None), &[1]);
        check(&ix, &q(&[], &[], &[], Some(&[1])), &[u32::MAX]);
        ix.upsert(u32::MAX, 0, &[] as &[&str]);
        assert_eq!(ix.tags(), ["a", "b"], "tag c dropped once empty");
        assert!(ix.status_bitmap(1).is_none(), "status 1 dropped once empty");
        assert_eq!(ix.len(), 5);
    }

    #[test]
    fn remove_contact() {
        let mut ix = sample();
        assert!(ix.remove(3));
        assert!(!ix.remove(3));
        assert!(!ix.remove(77));
        assert_eq!(ix.len(), 4);
        check(&ix, &q(&["b", "c"], &[], &[], None), &[1, u32::MAX]);
        assert!(ix.remove(u32::MAX));
        assert_eq!(ix.tags(), ["a", "b"]);
        assert!(ix.status_bitmap(1).is_none());
    }

    #[test]
    fn upsert_many_matches_sequential_upserts() {
        let contacts = [5, 1, 9, 5, 2, 1];
        let statuses = [1, 2, 3, 4, 0, 7];
        let tags: Vec<Vec<&str>> = vec![
            vec!["x"],
            vec!["a", "a"],
            vec![],
            vec!["y", "b"],
            vec!["c"],
            vec!["x", "z"],
        ];
        let mut batch = sample();
        batch.upsert_many(&contacts, &statuses, &tags).unwrap();
        let mut seq = sample();
        for i in 0..contacts.len() {
            seq.upsert(contacts[i], statuses[i], &tags[i]);
        }
        assert_eq!(batch.tags(), seq.tags());
        assert_eq!(batch.all(), seq.all());
        for t in seq.tags() {
            assert_eq!(batch.tag_bitmap(&t), seq.tag_bitmap(&t), "{t}");
        }
        for s in 0..=255u8 {
            assert_eq!(batch.status_bitmap(s), seq.status_bitmap(s), "{s}");
        }
    }

    #[test]
    fn upsert_raw_matches_upsert_many() {
        let contacts = [5u32, 1, 9, 5, 2, u32::MAX];
        let statuses = [1, 2, 3, 4, 0, 7];
        let json: [&[u8]; 6] = [
            br#"["x"]"#,
            br#"["a","a"]"#,
            b"[]",
            br#"["y", "b"]"#,
            br#"["c\u00e9","q\"t"]"#,
            br#"["x","z"]"#,
        ];
        let tags: Vec<Vec<&str>> = vec![
            vec!["x"],
            vec!["a", "a"],
            vec![],
            vec!["y", "b"],
            vec!["c\u{e9}", "q\"t"],
            vec!["x", "z"],
        ];
        let raw: Vec<u8> = contacts.iter().flat_map(|c| c.to_le_bytes()).collect();
        let mut a = sample();
        a.upsert_raw(&raw, &statuses, &json).unwrap();
        let mut b = sample();
        b.upsert_many(&contacts, &statuses, &tags).unwrap();
        assert_eq!(a.tags(), b.tags());
        assert_eq!(a.all(), b.all());
        for t in b.tags() {
            assert_eq!(a.tag_bitmap(&t), b.tag_bitmap(&t), "{t}");
        }
        for s in 0..=255u8 {
            assert_eq!(a.status_bitmap(s), b.status_bitmap(s), "{s}");
        }
    }

    #[test]
    fn upsert_raw_rejects_bad_input_without_changing_the_index() {
        let mut ix = sample();
        let before = ix.clone();
        let one = 7u32.to_le_bytes();
        let two = [one, one].concat();
        type Case<'a> = (&'a [u8], &'a [u8], &'a [&'a [u8]]);
        let cases: [Case<'_>; 5] = [
            (&one[..3], &[], &[]),
            (&one, &[0, 0], &[b"[]"]),
            (&one, &[0], &[]),
            (&one, &[0], &[br#"["a",]"#]),
            (&two, &[0, 0], &[b"[]", b"[1]"]),
        ];
        for (contacts, statuses, json) in cases {
            let err = ix.upsert_raw(contacts, statuses, json).unwrap_err();
            assert!(matches!(err, Error::Audience(_)), "{err}");
        }
        let err = ix
            .upsert_raw(&two, &[0, 0], &[&b"[]"[..], b"[1]"])
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("tags_json[1]: expected a string at byte 1"),
            "{err}"
        );
        assert_eq!(ix.all(), before.all());
        assert_eq!(ix.tags(), before.tags());
        ix.upsert_raw::<&[u8]>(&[], &[], &[]).unwrap();
        assert_eq!(ix.all(), before.all());
    }

    /// `upsert_packed` equals `upsert_many` on the same rows: repeats (last wins), escapes,
    /// whitespace between arrays, sorted and unsorted batches, onto a non-empty index.
    #[test]
    fn upsert_packed_matches_upsert_many() {
        let contacts = [5u32, 1, 9, 5, 2, u32::MAX];
        let statuses = [1u8, 2, 3, 4, 0, 255];
        let tags: Vec<Vec<&str>> = vec![
            vec!["x"],
            vec!["a", "a"],
            vec![],
            vec!["y", "b"],
            vec!["c\u{e9}", "q\"t"],
            vec!["x", "z"],
        ];
        let json = br#"["x"]
["a","a"] []["y", "b"]
 ["c\u00e9","q\"t"]
["x","z"]
"#;
        let mut a = sample();
        a.upsert_packed(b"5,1,9,5,2,4294967295", b"1,2,3,4,0,255", json)
            .unwrap();
        let mut b = sample();
        b.upsert_many(&contacts, &statuses, &tags).unwrap();
        assert_same(&a, &b);
        // a strictly increasing batch (the bulk-load shape)
        let mut a = AudienceIndex::new();
        a.upsert_packed(b"1,2,30", b"0,0,1", br#"["t"] ["t","u"] []"#)
            .unwrap();
        let mut b = AudienceIndex::new();
        b.upsert_many(
            &[1, 2, 30],
            &[0, 0, 1],
            &[vec!["t"], vec!["t", "u"], vec![]],
        )
        .unwrap();
        assert_same(&a, &b);
        a.upsert_packed(b"", b"", b"").unwrap();
        assert_same(&a, &b);
    }

    fn assert_same(a: &AudienceIndex, b: &AudienceIndex) {
        assert_eq!(a.tags(), b.tags());
        assert_eq!(a.all(), b.all());
        for t in b.tags() {
            assert_eq!(a.tag_bitmap(&t), b.tag_bitmap(&t), "{t}");
        }
        for s in 0..=255u8 {
            assert_eq!(a.status_bitmap(s), b.status_bitmap(s), "{s}");
        }
    }

    #[test]
    fn upsert_packed_rejects_bad_input_without_changing_the_index() {
        let mut ix = sample();
        let before = ix.clone();
        type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a str);
        let cases: [Case<'_>; 10] = [
            (
                b"1,2",
                b"0",
                b"[] []",
                "count mismatch (contacts=2, statuses=1, tags_json=2)",
            ),
            (
                b"1",
                b"0",
                b"[] []",
                "count mismatch (contacts=1, statuses=1, tags_json=2)",
            ),
            (
                b"1,",
                b"0",
                b"[]",
                "contacts: expected a decimal number at byte 2",
            ),
            (
                b"1,x",
                b"0",
                b"[]",
                "contacts: expected a decimal number at byte 2",
            ),
            (
                b"4294967296",
                b"0",
                b"[]",
                "contacts: expected a decimal number at byte 0",
            ),
            (
                b"1",
                b"256",
                b"[]",
                "statuses: expected a decimal number at byte 0",
            ),
            (
                b"1",
                b"-1",
                b"[]",
                "statuses: expected a decimal number at byte 0",
            ),
            (
                b"1",
                b"0",
                b"[1]",
                "tags_json row 0: expected a string at byte 1",
            ),
            (
                b"1,2",
                b"0,0",
                b"[] [\"a\",]",
                "tags_json row 1: expected a string at byte 8",
            ),
            (
                b"1",
                b"0",
                b"[]x",
                "tags_json row 1: expected '[' at byte 2",
            ),
        ];
        for (contacts, statuses, json, message) in cases {
            let err = ix.upsert_packed(contacts, statuses, json).unwrap_err();
            assert_eq!(err.to_string(), format!("upsert_packed: {message}"));
        }
        assert_same(&ix, &before);
    }

    #[test]
    fn upsert_many_length_mismatch() {
        let mut ix = AudienceIndex::new();
        let err = ix
            .upsert_many(&[1, 2], &[0], &[vec!["a"], vec![]])
            .unwrap_err();
        assert!(matches!(err, Error::Audience(_)));
        assert!(ix.is_empty());
        ix.upsert_many::<&str>(&[], &[], &[]).unwrap();
        assert!(ix.is_empty());
    }
}
