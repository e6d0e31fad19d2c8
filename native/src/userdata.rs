//! `UserDataKernel`: `hashing.UserDataHasher.hash_user_data` for a whole raw user_data dict in
//! one call. The rules are `capi-userdata`'s copy of `userdata.py`'s; whatever that copy defers
//! (and every value that is not a plain string or date) goes to `fallback`, the Python hasher's
//! own `digest`, so the answer is always the Python rule's.

use capi_userdata::{digest, py_strip, sha256_hex, Outcome, PhoneCountry, Rule, Tables, RULES};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDate, PyDict, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// FNV-1a over a key's bytes: field names are a few bytes, where SipHash's setup dominates.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    }
}

/// What the kernel does with a user_data field.
#[derive(Clone, Copy)]
enum Field {
    /// Sent as the trimmed raw string (client_ip_address, client_user_agent, click_id).
    Raw,
    /// Hashed by this compiled rule, or (None) by the Python rule always.
    Hashed(Option<Rule>),
}

/// The rules' answers by raw text: names, cities and repeat customers' emails recur, and a
/// lookup costs a tenth of normalizing and hashing. Direct-mapped, one table of `slots` per
/// rule: a miss overwrites its slot in place, so a stream of new customers allocates nothing
/// for it and memory stays fixed.
struct Cache {
    slots: usize,
    tables: Vec<Vec<(String, Option<Cached>)>>,
    /// Avro `date` values' digests by YYYYMMDD: dates of birth recur like names do.
    dates: Vec<(u32, Option<Py<PyString>>)>,
}

impl Cache {
    fn new(slots: usize) -> Cache {
        let slots = if slots == 0 {
            0
        } else {
            slots.next_power_of_two()
        };
        // Each rule's table is made at its first answer: most mappings use a few rules.
        Cache {
            slots,
            tables: (0..RULES).map(|_| Vec::new()).collect(),
            dates: Vec::new(),
        }
    }

    fn date<'py>(&self, py: Python<'py>, yyyymmdd: u32) -> Option<Bound<'py, PyString>> {
        let (key, digest) = self
            .dates
            .get(yyyymmdd as usize & self.slots.wrapping_sub(1))?;
        digest
            .as_ref()
            .filter(|_| *key == yyyymmdd)
            .map(|d| d.bind(py).clone())
    }

    fn put_date(&mut self, yyyymmdd: u32, digest: &Bound<'_, PyString>) {
        if self.slots == 0 {
            return;
        }
        if self.dates.is_empty() {
            self.dates.resize_with(self.slots, || (0, None));
        }
        self.dates[yyyymmdd as usize & (self.slots - 1)] =
            (yyyymmdd, Some(digest.clone().unbind()));
    }

    /// FNV-1a: a few nanoseconds on the short texts user data is made of.
    fn slot(&self, raw: &str) -> usize {
        let hash = raw.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash as usize) & (self.slots - 1)
    }

    fn get<'py>(&self, py: Python<'py>, rule: Rule, raw: &str) -> Option<Answer<'py>> {
        if self.slots == 0 {
            return None;
        }
        let (key, cached) = self.tables[rule as usize].get(self.slot(raw))?;
        cached.as_ref().filter(|_| key == raw).map(|c| c.answer(py))
    }

    fn put(&mut self, rule: Rule, raw: &str, answer: &Answer<'_>) {
        if self.slots == 0 {
            return;
        }
        let slot = self.slot(raw);
        let table = &mut self.tables[rule as usize];
        if table.is_empty() {
            table.resize_with(self.slots, || (String::new(), None));
        }
        let (key, cached) = &mut table[slot];
        key.clear();
        key.push_str(raw);
        *cached = Some(Cached::of(answer));
    }
}

/// One value's answer, as `hashing._digester` gives it.
enum Answer<'py> {
    Digest(Bound<'py, PyString>),
    Reason(Bound<'py, PyString>),
    Empty,
}

enum Cached {
    Digest(Py<PyString>),
    Reason(Py<PyString>),
    Empty,
}

impl Cached {
    fn of(answer: &Answer<'_>) -> Cached {
        match answer {
            Answer::Digest(text) => Cached::Digest(text.clone().unbind()),
            Answer::Reason(text) => Cached::Reason(text.clone().unbind()),
            Answer::Empty => Cached::Empty,
        }
    }

    fn answer<'py>(&self, py: Python<'py>) -> Answer<'py> {
        match self {
            Cached::Digest(text) => Answer::Digest(text.bind(py).clone()),
            Cached::Reason(text) => Answer::Reason(text.bind(py).clone()),
            Cached::Empty => Answer::Empty,
        }
    }
}

#[pyclass(frozen, module = "capi_native")]
pub struct UserDataKernel {
    /// Every field this kernel knows; another goes to Python, which raises.
    fields: HashMap<String, Field, BuildHasherDefault<Fnv>>,
    tables: Tables,
    /// `UserDataHasher.digest(field, value)`.
    fallback: Py<PyAny>,
    max_text_chars: usize,
    max_items: usize,
    cache: Mutex<Cache>,
    too_long: Py<PyString>,
    wrong_type: Py<PyString>,
    no_value: Py<PyString>,
    invalid: Py<PyString>,
}

fn extract_map(tables: &Bound<'_, PyDict>, key: &str) -> PyResult<HashMap<String, String>> {
    tables.as_any().get_item(key)?.extract()
}

fn extract_set(tables: &Bound<'_, PyDict>, key: &str) -> PyResult<HashSet<String>> {
    let items: Vec<String> = tables.as_any().get_item(key)?.extract()?;
    Ok(items.into_iter().collect())
}

#[pymethods]
impl UserDataKernel {
    /// `rules`: field → rule name or None; `tables`: genders, no_gender, states, countries,
    /// no_postcode, phone ({code: (national prefix pattern or None, possible-length mask)}),
    /// default_phone_is_nanp; `cache_slots`: answers kept per rule (0: none). See
    /// `consumer.conversion.hashing.UserDataHasher`.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        rules: HashMap<String, Option<String>>,
        raw_fields: Vec<String>,
        tables: &Bound<'_, PyDict>,
        fallback: Py<PyAny>,
        max_text_chars: usize,
        max_items: usize,
        cache_slots: usize,
    ) -> PyResult<Self> {
        let mut fields = HashMap::default();
        for (field, name) in rules {
            let rule = match name {
                Some(name) => Some(Rule::from_name(&name).ok_or_else(|| {
                    pyo3::exceptions::PyValueError::new_err(format!("no compiled rule {name}"))
                })?),
                None => None,
            };
            fields.insert(field, Field::Hashed(rule));
        }
        for field in raw_fields {
            fields.insert(field, Field::Raw);
        }
        let phone: HashMap<u32, (Option<String>, u32)> =
            tables.as_any().get_item("phone")?.extract()?;
        let mut phone_countries = HashMap::new();
        for (code, (prefix, mask)) in phone {
            let country = PhoneCountry::new(prefix.as_deref(), mask)
                .map_err(pyo3::exceptions::PyValueError::new_err)?;
            phone_countries.insert(code, country);
        }
        let tables_out = Tables {
            genders: extract_map(tables, "genders")?,
            no_gender: extract_set(tables, "no_gender")?,
            states: extract_map(tables, "states")?,
            countries: extract_map(tables, "countries")?,
            no_postcode: extract_set(tables, "no_postcode")?,
            phone_countries,
            default_phone_is_nanp: tables
                .as_any()
                .get_item("default_phone_is_nanp")?
                .extract()?,
        };
        Ok(UserDataKernel {
            fields,
            tables: tables_out,
            fallback,
            max_text_chars,
            max_items,
            cache: Mutex::new(Cache::new(cache_slots)),
            too_long: PyString::intern(py, "too_long").unbind(),
            wrong_type: PyString::intern(py, "wrong_type").unbind(),
            no_value: PyString::intern(py, "no_value").unbind(),
            invalid: PyString::intern(py, "invalid").unbind(),
        })
    }

    /// `fallback` is a bound method of the hasher that holds this kernel: a cycle the garbage
    /// collector can only see, and so free, through this.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.fallback)
    }

    /// Hashed user_data and the fields left out of it, with why: `hash_user_data`'s answer.
    fn hash_user_data<'py>(
        &self,
        py: Python<'py>,
        raw: &Bound<'py, PyDict>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyTuple>)> {
        let user_data = PyDict::new(py);
        let mut dropped: Vec<Bound<'py, PyTuple>> = Vec::new();
        let mut leave_out =
            |field: &Bound<'py, PyAny>, reason: &Bound<'py, PyString>| -> PyResult<()> {
                dropped.push(PyTuple::new(
                    py,
                    [field.clone(), reason.clone().into_any()],
                )?);
                Ok(())
            };
        for (field, value) in raw.iter() {
            let name = field.cast::<PyString>().ok().and_then(|s| s.to_str().ok());
            let name = name.unwrap_or("");
            // None for a field this kernel does not know: Python's lookup then raises.
            let kind = self.fields.get(name).copied();
            if let Some(Field::Raw) = kind {
                if let Ok(text) = value.cast_exact::<PyString>() {
                    if text.len()? > self.max_text_chars {
                        leave_out(&field, self.too_long.bind(py))?;
                    } else if let Some(stripped) = stripped(text)? {
                        user_data.set_item(&field, stripped)?;
                    }
                } else if !value.is_none() {
                    leave_out(&field, self.wrong_type.bind(py))?;
                }
                continue;
            }
            let rule = match kind {
                Some(Field::Hashed(rule)) => rule,
                _ => None,
            };
            if let Ok(text) = value.cast_exact::<PyString>() {
                if text.len()? <= self.max_text_chars {
                    match self.text_answer(py, &field, text, rule)? {
                        Answer::Digest(digest) => {
                            user_data.set_item(&field, PyList::new(py, [digest])?)?
                        }
                        Answer::Reason(reason) => leave_out(&field, &reason)?,
                        Answer::Empty => {}
                    }
                    continue;
                }
            }
            let items: Vec<Bound<'py, PyAny>> = match value.cast_exact::<PyList>() {
                Ok(list) if list.len() > self.max_items => {
                    leave_out(&field, self.too_long.bind(py))?;
                    continue;
                }
                Ok(list) => list.iter().collect(),
                Err(_) => vec![value],
            };
            let mut digests: Vec<Bound<'py, PyString>> = Vec::new();
            for item in items {
                if item.is_none() {
                    continue;
                }
                match self.item_answer(py, &field, name, &item, rule)? {
                    Answer::Digest(digest) => {
                        let text = digest.to_str()?;
                        if !digests.iter().any(|d| d.to_str().is_ok_and(|d| d == text)) {
                            digests.push(digest);
                        }
                    }
                    Answer::Reason(reason) => leave_out(&field, &reason)?,
                    Answer::Empty => {}
                }
            }
            if !digests.is_empty() {
                user_data.set_item(&field, PyList::new(py, digests)?)?;
            }
        }
        Ok((user_data, PyTuple::new(py, dropped)?))
    }
}

/// `value.strip()`, None when nothing is left.
fn stripped<'py>(text: &Bound<'py, PyString>) -> PyResult<Option<Bound<'py, PyString>>> {
    let result = match text.to_str() {
        Ok(whole) => {
            let inner = py_strip(whole);
            if inner.len() == whole.len() {
                text.clone()
            } else {
                PyString::new(text.py(), inner)
            }
        }
        // Lone surrogates have no UTF-8: Python strips them.
        Err(_) => text
            .call_method0(intern!(text.py(), "strip"))?
            .cast_into()?,
    };
    Ok((result.len()? > 0).then_some(result))
}

impl UserDataKernel {
    fn reason<'py>(&self, py: Python<'py>, reason: &str) -> Bound<'py, PyString> {
        match reason {
            "no_value" => self.no_value.bind(py).clone(),
            "invalid" => self.invalid.bind(py).clone(),
            "too_long" => self.too_long.bind(py).clone(),
            "wrong_type" => self.wrong_type.bind(py).clone(),
            other => PyString::new(py, other),
        }
    }

    /// What Python's `digest(field, value)` answered, read as `hash_user_data` reads it.
    fn python_answer<'py>(
        &self,
        py: Python<'py>,
        field: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Answer<'py>> {
        let answer = self.fallback.bind(py).call1((field, value))?;
        let answer = answer.cast_into::<PyString>()?;
        Ok(match answer.len()? {
            64 => Answer::Digest(answer),
            0 => Answer::Empty,
            _ => Answer::Reason(answer),
        })
    }

    fn text_answer<'py>(
        &self,
        py: Python<'py>,
        field: &Bound<'py, PyAny>,
        text: &Bound<'py, PyString>,
        rule: Option<Rule>,
    ) -> PyResult<Answer<'py>> {
        let (Some(rule), Ok(raw)) = (rule, text.to_str()) else {
            return self.python_answer(py, field, text.as_any());
        };
        if let Some(hit) = self
            .cache
            .lock()
            .expect("never poisoned")
            .get(py, rule, raw)
        {
            return Ok(hit);
        }
        let answer = match digest(rule, raw, &self.tables) {
            Outcome::Digest(hex) => Answer::Digest(PyString::new(py, &hex)),
            Outcome::Omitted(reason) => Answer::Reason(self.reason(py, reason)),
            Outcome::Empty => Answer::Empty,
            // Python's own cache keeps what its rule decides.
            Outcome::Defer => return self.python_answer(py, field, text.as_any()),
        };
        self.cache
            .lock()
            .expect("never poisoned")
            .put(rule, raw, &answer);
        Ok(answer)
    }

    /// `UserDataHasher.digest` for one item of a field's value.
    fn item_answer<'py>(
        &self,
        py: Python<'py>,
        field: &Bound<'py, PyAny>,
        name: &str,
        item: &Bound<'py, PyAny>,
        rule: Option<Rule>,
    ) -> PyResult<Answer<'py>> {
        if let Ok(text) = item.cast_exact::<PyString>() {
            if text.len()? > self.max_text_chars {
                return Ok(Answer::Reason(self.too_long.bind(py).clone()));
            }
            return self.text_answer(py, field, text, rule);
        }
        if name == "db" && item.is_instance_of::<PyDate>() {
            // An Avro `date` (or a datetime): strftime("%Y%m%d"), which pads no year below 1000.
            let part = |attr| -> PyResult<i32> { item.getattr(attr)?.extract() };
            let year = part(intern!(py, "year"))?;
            if (1000..=9999).contains(&year) {
                let (month, day) = (part(intern!(py, "month"))?, part(intern!(py, "day"))?);
                let yyyymmdd = (year * 10_000 + month * 100 + day) as u32;
                let mut cache = self.cache.lock().expect("never poisoned");
                if let Some(digest) = cache.date(py, yyyymmdd) {
                    return Ok(Answer::Digest(digest));
                }
                let digest = PyString::new(py, &sha256_hex(&format!("{yyyymmdd:08}")));
                cache.put_date(yyyymmdd, &digest);
                return Ok(Answer::Digest(digest));
            }
        }
        self.python_answer(py, field, item)
    }
}
