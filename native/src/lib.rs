//! Avro binary decoding compiled once per writer schema.
//!
//! `consumer.stages.decode` turns a parsed writer schema into a plan (nested tuples, see
//! `consumer/stages/avroplan.py`); `Plan` holds it as a tree with the record keys and enum symbols
//! already made into Python strings, so decoding a message only walks bytes and builds values.
//! The result must be exactly what fastavro's `schemaless_reader` returns for the same bytes.
//! Anything unusual (truncated data, a bad union index, invalid UTF-8, a value out of range)
//! makes `decode` answer `None`, and the caller asks fastavro, whose verdict (value or error)
//! is then the one the consumer acts on: this module never decides that bytes are bad.

mod userdata;

use capi_avro_wire::{civil_from_days, decimal_text, Cursor};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDate, PyDateTime, PyDict, PyList, PyString, PyTuple, PyTzInfo};

enum Node {
    Null,
    Boolean,
    Long, // Avro int and long: fastavro reads both as a varint of any width
    Float,
    Double,
    Bytes,
    String,
    Record(Vec<(Py<PyString>, Node)>),
    Enum(Vec<Py<PyString>>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Fixed(usize),
    Decimal {
        size: Option<usize>,
        precision: u32,
        scale: u32,
    },
    Timestamp {
        micros_per_unit: i64,
        utc: bool,
    },
    Date,
}

// Plan kinds, shared with consumer/stages/avroplan.py.
const NULL: u8 = 0;
const BOOLEAN: u8 = 1;
const LONG: u8 = 2;
const FLOAT: u8 = 3;
const DOUBLE: u8 = 4;
const BYTES: u8 = 5;
const STRING: u8 = 6;
const RECORD: u8 = 7;
const ENUM: u8 = 8;
const ARRAY: u8 = 9;
const MAP: u8 = 10;
const UNION: u8 = 11;
const FIXED: u8 = 12;
const DECIMAL: u8 = 13;
const TIMESTAMP: u8 = 14;
const DATE: u8 = 15;

fn strings(py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<Vec<Py<PyString>>> {
    let mut out = Vec::new();
    for item in items.try_iter()? {
        let text: String = item?.extract()?;
        out.push(PyString::intern(py, &text).unbind());
    }
    Ok(out)
}

fn build(py: Python<'_>, plan: &Bound<'_, PyAny>) -> PyResult<Node> {
    let plan = plan.cast::<PyTuple>()?;
    let kind: u8 = plan.get_item(0)?.extract()?;
    let arg = |i: usize| plan.get_item(i);
    Ok(match kind {
        NULL => Node::Null,
        BOOLEAN => Node::Boolean,
        LONG => Node::Long,
        FLOAT => Node::Float,
        DOUBLE => Node::Double,
        BYTES => Node::Bytes,
        STRING => Node::String,
        RECORD => {
            let names = strings(py, &arg(1)?)?;
            let mut fields = Vec::with_capacity(names.len());
            for (name, node) in names.into_iter().zip(arg(2)?.try_iter()?) {
                fields.push((name, build(py, &node?)?));
            }
            Node::Record(fields)
        }
        ENUM => Node::Enum(strings(py, &arg(1)?)?),
        ARRAY => Node::Array(Box::new(build(py, &arg(1)?)?)),
        MAP => Node::Map(Box::new(build(py, &arg(1)?)?)),
        UNION => {
            let mut branches = Vec::new();
            for branch in arg(1)?.try_iter()? {
                branches.push(build(py, &branch?)?);
            }
            Node::Union(branches)
        }
        FIXED => Node::Fixed(arg(1)?.extract()?),
        DECIMAL => Node::Decimal {
            size: arg(1)?.extract()?,
            precision: arg(2)?.extract()?,
            scale: arg(3)?.extract()?,
        },
        TIMESTAMP => Node::Timestamp {
            micros_per_unit: arg(1)?.extract()?,
            utc: arg(2)?.extract()?,
        },
        DATE => Node::Date,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown plan kind {kind}"
            )))
        }
    })
}

/// Why decoding stopped: bytes that need fastavro's verdict, or a Python error (memory).
enum Stop {
    Unusual,
    Python(PyErr),
}

impl From<std::convert::Infallible> for Stop {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<PyErr> for Stop {
    fn from(err: PyErr) -> Self {
        Stop::Python(err)
    }
}

type Step<T> = Result<T, Stop>;

struct Reader<'a, 'py> {
    py: Python<'py>,
    wire: Cursor<'a>,
    decimal: &'a Bound<'py, PyAny>,
}

impl<'a, 'py> Reader<'a, 'py> {
    fn take(&mut self, len: usize) -> Step<&'a [u8]> {
        self.wire.take(len).ok_or(Stop::Unusual)
    }

    fn long(&mut self) -> Step<i64> {
        self.wire.long().ok_or(Stop::Unusual)
    }

    fn length(&mut self) -> Step<usize> {
        self.wire.length().ok_or(Stop::Unusual)
    }

    fn block(&mut self) -> Step<usize> {
        self.wire.block().ok_or(Stop::Unusual)
    }

    /// Read an array's or a map's blocks, calling `read_one` once per item.
    fn each_item(&mut self, mut read_one: impl FnMut(&mut Self) -> Step<()>) -> Step<()> {
        loop {
            let count = self.block()?;
            if count == 0 {
                return Ok(());
            }
            for _ in 0..count {
                read_one(self)?;
            }
        }
    }

    fn text(&mut self) -> Step<Bound<'py, PyString>> {
        let len = self.length()?;
        let raw = self.take(len)?;
        let text = std::str::from_utf8(raw).map_err(|_| Stop::Unusual)?;
        Ok(PyString::new(self.py, text))
    }

    fn decimal(
        &mut self,
        size: Option<usize>,
        precision: u32,
        scale: u32,
    ) -> Step<Bound<'py, PyAny>> {
        let len = match size {
            Some(size) => size,
            None => self.length()?,
        };
        let raw = self.take(len)?;
        let text = decimal_text(raw, precision, scale).ok_or(Stop::Unusual)?;
        Ok(self.decimal.call1((text,))?)
    }

    fn timestamp(&mut self, micros_per_unit: i64, utc: bool) -> Step<Bound<'py, PyAny>> {
        let micros = self
            .long()?
            .checked_mul(micros_per_unit)
            .ok_or(Stop::Unusual)?;
        let days = micros.div_euclid(86_400_000_000);
        let in_day = micros.rem_euclid(86_400_000_000);
        let (year, month, day) = civil_from_days(days).ok_or(Stop::Unusual)?;
        if !(1..=9999).contains(&year) {
            return Err(Stop::Unusual);
        }
        let seconds = in_day / 1_000_000;
        let tz = if utc {
            Some(PyTzInfo::utc(self.py)?.to_owned())
        } else {
            None
        };
        let value = PyDateTime::new(
            self.py,
            year as i32,
            month,
            day,
            (seconds / 3600) as u8,
            (seconds / 60 % 60) as u8,
            (seconds % 60) as u8,
            (in_day % 1_000_000) as u32,
            tz.as_ref(),
        )?;
        Ok(value.into_any())
    }

    fn date(&mut self) -> Step<Bound<'py, PyAny>> {
        let (year, month, day) = civil_from_days(self.long()?).ok_or(Stop::Unusual)?;
        if !(1..=9999).contains(&year) {
            return Err(Stop::Unusual);
        }
        Ok(PyDate::new(self.py, year as i32, month, day)?.into_any())
    }

    fn value(&mut self, node: &Node) -> Step<Bound<'py, PyAny>> {
        let py = self.py;
        Ok(match node {
            Node::Null => py.None().into_bound(py),
            Node::Boolean => match self.take(1)?[0] {
                0 => false.into_pyobject(py)?.to_owned().into_any(),
                1 => true.into_pyobject(py)?.to_owned().into_any(),
                _ => return Err(Stop::Unusual),
            },
            Node::Long => self.long()?.into_pyobject(py)?.into_any(),
            Node::Float => {
                let raw = self.take(4)?;
                let value = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                f64::from(value).into_pyobject(py)?.into_any()
            }
            Node::Double => {
                let raw: [u8; 8] = self.take(8)?.try_into().map_err(|_| Stop::Unusual)?;
                f64::from_le_bytes(raw).into_pyobject(py)?.into_any()
            }
            Node::Bytes => {
                let len = self.length()?;
                PyBytes::new(py, self.take(len)?).into_any()
            }
            Node::String => self.text()?.into_any(),
            Node::Record(fields) => {
                let record = PyDict::new(py);
                for (name, field) in fields {
                    record.set_item(name.bind(py), self.value(field)?)?;
                }
                record.into_any()
            }
            Node::Enum(symbols) => {
                let index = usize::try_from(self.long()?).map_err(|_| Stop::Unusual)?;
                symbols
                    .get(index)
                    .ok_or(Stop::Unusual)?
                    .bind(py)
                    .clone()
                    .into_any()
            }
            Node::Array(item) => {
                let items = PyList::empty(py);
                self.each_item(|reader| Ok(items.append(reader.value(item)?)?))?;
                items.into_any()
            }
            Node::Map(value) => {
                let entries = PyDict::new(py);
                self.each_item(|reader| {
                    let key = reader.text()?;
                    Ok(entries.set_item(key, reader.value(value)?)?)
                })?;
                entries.into_any()
            }
            Node::Union(branches) => {
                let index = usize::try_from(self.long()?).map_err(|_| Stop::Unusual)?;
                let branch = branches.get(index).ok_or(Stop::Unusual)?;
                self.value(branch)?
            }
            Node::Fixed(size) => PyBytes::new(py, self.take(*size)?).into_any(),
            Node::Decimal {
                size,
                precision,
                scale,
            } => self.decimal(*size, *precision, *scale)?,
            Node::Timestamp {
                micros_per_unit,
                utc,
            } => self.timestamp(*micros_per_unit, *utc)?,
            Node::Date => self.date()?,
        })
    }
}

/// A writer schema compiled for decoding; built from the plan `consumer.stages.avroplan` makes.
#[pyclass(frozen, module = "capi_native")]
struct Plan {
    root: Node,
    decimal: Py<PyAny>,
}

#[pymethods]
impl Plan {
    #[new]
    fn new(py: Python<'_>, plan: &Bound<'_, PyAny>) -> PyResult<Self> {
        let decimal = py.import("decimal")?.getattr("Decimal")?.unbind();
        Ok(Plan {
            root: build(py, plan)?,
            decimal,
        })
    }

    /// Decode `value[offset:]`: (record, offset after it), or None when fastavro must decide.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        value: &[u8],
        offset: usize,
    ) -> PyResult<Option<(Bound<'py, PyAny>, usize)>> {
        let decimal = self.decimal.bind(py);
        let mut reader = Reader {
            py,
            wire: Cursor::new(value, offset),
            decimal,
        };
        if offset > value.len() {
            return Ok(None);
        }
        match reader.value(&self.root) {
            Ok(record) => Ok(Some((record, reader.wire.pos()))),
            Err(Stop::Unusual) => Ok(None),
            Err(Stop::Python(err)) => Err(err),
        }
    }
}

#[pymodule]
mod capi_native {
    #[pymodule_export]
    use super::userdata::UserDataKernel;
    #[pymodule_export]
    use super::Plan;
}
