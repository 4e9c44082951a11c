//! A reader of the pickle programs `torch.save` writes for a state dict
//! (`data.pkl`): it imports and calls nothing. It follows the opcodes of
//! protocols 2 to 5 that such a file holds, allows only the few globals a
//! state dict needs, and reports every storage (persistent id) the program
//! names and the tensors (`_rebuild_tensor_v2/_v3`, `_rebuild_parameter`)
//! of the dict it returns.

use std::cell::RefCell;
use std::rc::Rc;

use tch::Kind;

/// A storage as its persistent id describes it:
/// `('storage', torch.XStorage, key, location, numel)`.
#[derive(Debug, PartialEq)]
pub(crate) struct Storage {
    pub key: String,
    /// `FloatStorage`, ...
    pub kind_name: &'static str,
    pub kind: Kind,
    /// Bytes per element.
    pub elem: u64,
    pub numel: u64,
}

impl Storage {
    /// The bytes its record must hold.
    pub fn bytes(&self) -> Option<u64> {
        self.numel.checked_mul(self.elem)
    }
}

/// A tensor as `_rebuild_tensor_v2/_v3` builds it: a strided view of a storage.
#[derive(Debug)]
pub(crate) struct TensorRef {
    pub storage: Rc<Storage>,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
    pub kind: Kind,
    /// Bytes per element.
    pub elem: u64,
}

impl TensorRef {
    /// Elements in the view.
    pub fn numel(&self) -> Option<u64> {
        self.size.iter().try_fold(1u64, |a, &s| a.checked_mul(s))
    }

    /// Checks that the view lies inside its storage; `what` names it.
    pub fn check_extent(&self, what: &str) -> Result<(), String> {
        let s = &self.storage;
        let over = || {
            format!("{what} (shape {:?}, stride {:?}, offset {}) reaches past the end of storage {} ({} elements of {}); the file is damaged", self.size, self.stride, self.offset, s.key, s.numel, s.kind_name)
        };
        if self.numel().ok_or_else(over)? == 0 {
            return Ok(());
        }
        // Last element reached: offset + Σ (size_i − 1)·stride_i, then one past it.
        let last = self
            .size
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |a, (&n, &st)| {
                a.checked_add((n - 1).checked_mul(st)?)
            });
        let end = last
            .and_then(|l| l.checked_add(1))
            .and_then(|e| e.checked_mul(self.elem));
        match (end, s.bytes()) {
            (Some(e), Some(b)) if e <= b => Ok(()),
            _ => Err(over()),
        }
    }
}

/// What a state dict's pickle describes.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The dict's entries, in pickle order.
    pub entries: Vec<(String, Rc<TensorRef>)>,
    /// Every storage referenced, once each, in order of first reference.
    pub storages: Vec<Rc<Storage>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Global {
    OrderedDict,
    RebuildV2,
    RebuildV3,
    RebuildParameter,
    StorageType(&'static str, u64, Kind),
    Dtype(u64, Kind),
}

type List = Rc<RefCell<Vec<V>>>;
type Dict = Rc<RefCell<Vec<(V, V)>>>;

/// A pickle value; containers are shared, as in Python, so that a memoised
/// dict filled later is seen filled.
#[derive(Clone, Debug)]
enum V {
    None,
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Vec<V>>),
    List(List),
    Dict(Dict),
    Global(Global),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
}

impl Global {
    fn name(&self) -> &'static str {
        match self {
            Global::OrderedDict => "collections.OrderedDict",
            Global::RebuildV2 => "torch._utils._rebuild_tensor_v2",
            Global::RebuildV3 => "torch._utils._rebuild_tensor_v3",
            Global::RebuildParameter => "torch._utils._rebuild_parameter",
            Global::StorageType(..) => "a storage type",
            Global::Dtype(..) => "a dtype",
        }
    }
}

impl V {
    fn kind(&self) -> &'static str {
        match self {
            V::None => "None",
            V::Bool => "bool",
            V::Int(_) => "number",
            V::Float => "float",
            V::Str(_) => "string",
            V::Bytes => "bytes object",
            V::Tuple(_) => "tuple",
            V::List(_) => "list",
            V::Dict(_) => "dict",
            V::Global(_) => "class or function",
            V::Storage(_) => "storage",
            V::Tensor(_) => "tensor",
        }
    }
}

/// `torch.<name>Storage`: element bytes and kind.
const STORAGES: [(&str, u64, Kind); 12] = [
    ("FloatStorage", 4, Kind::Float),
    ("DoubleStorage", 8, Kind::Double),
    ("HalfStorage", 2, Kind::Half),
    ("BFloat16Storage", 2, Kind::BFloat16),
    ("LongStorage", 8, Kind::Int64),
    ("IntStorage", 4, Kind::Int),
    ("ShortStorage", 2, Kind::Int16),
    ("CharStorage", 1, Kind::Int8),
    ("ByteStorage", 1, Kind::Uint8),
    ("BoolStorage", 1, Kind::Bool),
    ("ComplexFloatStorage", 8, Kind::ComplexFloat),
    ("ComplexDoubleStorage", 16, Kind::ComplexDouble),
];

/// `torch.<dtype>` (the dtype argument of `_rebuild_tensor_v3`).
const DTYPES: [(&str, u64, Kind); 18] = [
    ("float32", 4, Kind::Float),
    ("float", 4, Kind::Float),
    ("float64", 8, Kind::Double),
    ("double", 8, Kind::Double),
    ("float16", 2, Kind::Half),
    ("half", 2, Kind::Half),
    ("bfloat16", 2, Kind::BFloat16),
    ("int64", 8, Kind::Int64),
    ("long", 8, Kind::Int64),
    ("int32", 4, Kind::Int),
    ("int", 4, Kind::Int),
    ("int16", 2, Kind::Int16),
    ("short", 2, Kind::Int16),
    ("int8", 1, Kind::Int8),
    ("uint8", 1, Kind::Uint8),
    ("bool", 1, Kind::Bool),
    ("complex64", 8, Kind::ComplexFloat),
    ("complex128", 16, Kind::ComplexDouble),
];

fn resolve(module: &str, name: &str) -> Result<Global, String> {
    let g = match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildV2),
        ("torch._utils", "_rebuild_tensor_v3") => Some(Global::RebuildV3),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", n) => STORAGES
            .iter()
            .find(|s| s.0 == n)
            .map(|&(n, e, k)| Global::StorageType(n, e, k))
            .or_else(|| {
                DTYPES
                    .iter()
                    .find(|d| d.0 == n)
                    .map(|&(_, e, k)| Global::Dtype(e, k))
            }),
        _ => None,
    };
    g.ok_or_else(|| {
        format!("refers to {module}.{name}, which a state dict never needs; modeconn reads only tensors (the file is not a plain state dict, or was crafted)")
    })
}

/// Reads a state dict's pickle: its entries (each checked to lie inside
/// its storage) and storages. Errors are phrases to follow the file's name.
pub(crate) fn scan(data: &[u8]) -> Result<Scan, String> {
    let mut m = machine::Machine::new(data);
    let top = m.run()?;
    let entries = state_dict(top)?;
    for (name, t) in &entries {
        t.check_extent(&format!("tensor {name}"))?;
    }
    Ok(Scan {
        entries,
        storages: m.storages,
    })
}

/// The top-level value as `name -> tensor` entries.
fn state_dict(top: V) -> Result<Vec<(String, Rc<TensorRef>)>, String> {
    let V::Dict(d) = top else {
        return Err(format!(
            "holds a {} rather than a state dict (a dict of tensors); save model.state_dict()",
            top.kind()
        ));
    };
    let mut out: Vec<(String, Rc<TensorRef>)> = Vec::new();
    for (k, v) in d.borrow().iter() {
        let V::Str(name) = k else {
            return Err(format!(
                "has a key that is a {}, not a tensor name",
                k.kind()
            ));
        };
        let t = match v {
            V::Tensor(t) => t.clone(),
            V::Dict(_) => return Err(format!(
                "holds a dict under '{name}' instead of a tensor: a training checkpoint? Save the state dict alone, e.g. torch.save(torch.load(p)['{name}'], q)"
            )),
            other => return Err(format!(
                "holds a {} under '{name}', not a tensor; a state dict maps names to tensors (save model.state_dict())",
                other.kind()
            )),
        };
        if out.iter().any(|(n, _)| **n == **name) {
            return Err(format!("names tensor {name} twice"));
        }
        out.push((name.to_string(), t));
    }
    Ok(out)
}

/// The name of a pickle opcode, for refusals.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        b'I' => "INT",
        b'L' => "LONG",
        b'F' => "FLOAT",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'P' => "PERSID",
        b'g' => "GET",
        b'p' => "PUT",
        b'l' => "LIST",
        b'd' => "DICT",
        0x82..=0x84 => "EXT",
        0x8b => "LONG4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

mod machine;

#[cfg(test)]
pub(crate) mod tests;
