//! The opcodes: a stack machine that builds values, never code.

use std::collections::HashMap;
use std::rc::Rc;

use tch::Kind;

use super::{opcode_name, resolve, Dict, Global, List, Storage, TensorRef, V};

pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    marks: Vec<usize>,
    memo: HashMap<u32, V>,
    /// Every storage referenced, once each, in order of first reference.
    pub storages: Vec<Rc<Storage>>,
    by_key: HashMap<String, Rc<Storage>>,
}

impl<'a> Machine<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: Vec::new(),
            by_key: HashMap::new(),
        }
    }

    fn take(&mut self, n: u64) -> Result<&[u8], String> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.data.len())
            .ok_or("ends in the middle of an opcode: truncated")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn le(&mut self, n: u64) -> Result<u64, String> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("has a GLOBAL without its newline: truncated")?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| "has a GLOBAL name that is not text")?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }
    fn text(&mut self, n: u64) -> Result<V, String> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "has a string that is not UTF-8")?;
        Ok(V::Str(s.into()))
    }
    fn pop(&mut self) -> Result<V, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("pops past a MARK: damaged".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "pops an empty stack: damaged".into())
    }
    fn top(&self) -> Result<&V, String> {
        self.stack
            .last()
            .ok_or_else(|| "reads an empty stack: damaged".into())
    }
    fn pop_mark(&mut self) -> Result<Vec<V>, String> {
        let m = self.marks.pop().ok_or("has no MARK to close: damaged")?;
        if m > self.stack.len() {
            return Err("has a MARK past its stack: damaged".into());
        }
        Ok(self.stack.split_off(m))
    }
    fn memo_put(&mut self, i: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }
    fn memo_get(&mut self, i: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&i)
            .ok_or("reads a memo slot never written: damaged")?;
        self.stack.push(v.clone());
        Ok(())
    }
    fn list(&self) -> Result<List, String> {
        match self.top()? {
            V::List(l) => Ok(l.clone()),
            v => Err(format!("appends to a {}, not a list", v.kind())),
        }
    }
    fn dict(&self) -> Result<Dict, String> {
        match self.top()? {
            V::Dict(d) => Ok(d.clone()),
            v => Err(format!("sets an item of a {}, not a dict", v.kind())),
        }
    }

    /// Runs the program to its STOP; returns the value it leaves.
    pub fn run(&mut self) -> Result<V, String> {
        loop {
            if self.pos >= self.data.len() {
                return Err("ends before its STOP opcode: it is truncated".into());
            }
            let op = self.data[self.pos];
            self.pos += 1;
            match op {
                0x80 => {
                    let p = self.le(1)?;
                    if !(2..=5).contains(&p) {
                        return Err(format!("is pickle protocol {p}; torch.save writes 2 to 5"));
                    }
                }
                0x95 => {
                    self.le(8)?;
                }
                b'c' => {
                    let (m, n) = (self.line()?, self.line()?);
                    self.stack.push(V::Global(resolve(&m, &n)?));
                }
                0x93 => {
                    let (n, m) = (self.pop()?, self.pop()?);
                    let (V::Str(m), V::Str(n)) = (m, n) else {
                        return Err("has a STACK_GLOBAL whose names are not strings".into());
                    };
                    self.stack.push(V::Global(resolve(&m, &n)?));
                }
                b'q' => {
                    let i = self.le(1)? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.le(4)? as u32;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| "memoises too much")?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.le(1)? as u32;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.le(4)? as u32;
                    self.memo_get(i)?;
                }
                b'(' => self.marks.push(self.stack.len()),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(V::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
                    items.reverse();
                    self.stack.push(V::Tuple(Rc::new(items)));
                }
                b')' => self.stack.push(V::Tuple(Rc::new(Vec::new()))),
                b']' => self.stack.push(V::List(Rc::default())),
                b'}' => self.stack.push(V::Dict(Rc::default())),
                b'a' => {
                    let v = self.pop()?;
                    self.list()?.borrow_mut().push(v);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list()?.borrow_mut().extend(items);
                }
                b's' => {
                    let (v, k) = (self.pop()?, self.pop()?);
                    self.dict()?.borrow_mut().push((k, v));
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err("has a SETITEMS with a key but no value: damaged".into());
                    }
                    let d = self.dict()?;
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.borrow_mut().push((k, v));
                    }
                }
                b'J' => {
                    let v = self.le(4)? as u32 as i32;
                    self.stack.push(V::Int(v as i64));
                }
                b'K' => {
                    let v = self.le(1)?;
                    self.stack.push(V::Int(v as i64));
                }
                b'M' => {
                    let v = self.le(2)?;
                    self.stack.push(V::Int(v as i64));
                }
                0x8a => {
                    let n = self.le(1)?;
                    if n > 8 {
                        return Err(format!("has a {n}-byte integer; no state dict needs one"));
                    }
                    let raw = self.le(n)?;
                    // Sign-extend from n bytes.
                    let v = if n == 0 {
                        0
                    } else {
                        let shift = 64 - 8 * n as u32;
                        ((raw << shift) as i64) >> shift
                    };
                    self.stack.push(V::Int(v));
                }
                b'X' => {
                    let n = self.le(4)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.le(1)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.le(8)?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'T' | b'U' => {
                    let n = self.le(if op == b'T' { 4 } else { 1 })?;
                    let b = self.take(n)?;
                    let s: String = b.iter().map(|&c| c as char).collect();
                    self.stack.push(V::Str(s.into()));
                }
                b'B' | b'C' | 0x8e => {
                    let n = self.le(match op {
                        b'B' => 4,
                        b'C' => 1,
                        _ => 8,
                    })?;
                    self.take(n)?;
                    self.stack.push(V::Bytes);
                }
                b'N' => self.stack.push(V::None),
                0x88 | 0x89 => self.stack.push(V::Bool),
                b'G' => {
                    self.take(8)?;
                    self.stack.push(V::Float);
                }
                b'R' => {
                    let (args, f) = (self.pop()?, self.pop()?);
                    let v = self.call(f, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let (args, cls) = (self.pop()?, self.pop()?);
                    if !matches!(cls, V::Global(Global::OrderedDict)) {
                        return Err(format!("builds an object of a {} with NEWOBJ", cls.kind()));
                    }
                    let v = self.call(cls, args)?;
                    self.stack.push(v);
                }
                // The state of an object (a state dict's `_metadata`): not part of its items.
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = self.persistent(pid)?;
                    self.stack.push(V::Storage(s));
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                _ => {
                    return Err(format!(
                        "has opcode 0x{op:02x} ({}) at byte {}, which torch.save does not write; modeconn reads only tensors",
                        opcode_name(op),
                        self.pos - 1
                    ))
                }
            }
        }
    }

    /// `('storage', torch.XStorage, key, location, numel)`, the same for
    /// every reference to one key.
    fn persistent(&mut self, pid: V) -> Result<Rc<Storage>, String> {
        let bad = || {
            "has a persistent id that is not ('storage', type, key, location, numel)".to_string()
        };
        let V::Tuple(t) = pid else { return Err(bad()) };
        let [V::Str(tag), V::Global(Global::StorageType(kind_name, elem, kind)), V::Str(key), V::Str(_), V::Int(numel)] =
            t.as_slice()
        else {
            return Err(bad());
        };
        if &**tag != "storage" {
            return Err(bad());
        }
        let numel =
            u64::try_from(*numel).map_err(|_| format!("gives storage {key} {numel} elements"))?;
        let s = Storage {
            key: key.to_string(),
            kind_name,
            kind: *kind,
            elem: *elem,
            numel,
        };
        if let Some(old) = self.by_key.get(&s.key) {
            if **old != s {
                return Err(format!(
                    "describes storage {key} twice, differently ({} × {} and {} × {})",
                    old.numel, old.kind_name, s.numel, s.kind_name
                ));
            }
            return Ok(old.clone());
        }
        let s = Rc::new(s);
        self.by_key.insert(s.key.clone(), s.clone());
        self.storages.push(s.clone());
        Ok(s)
    }

    fn call(&mut self, f: V, args: V) -> Result<V, String> {
        let V::Global(g) = f else {
            return Err(format!("calls a {}", f.kind()));
        };
        let V::Tuple(args) = args else {
            return Err("calls a function with arguments that are not a tuple".into());
        };
        match g {
            Global::OrderedDict if args.is_empty() => Ok(V::Dict(Rc::default())),
            Global::RebuildV2 if (4..=7).contains(&args.len()) => self.tensor(&args, None),
            Global::RebuildV3 if (7..=8).contains(&args.len()) => match &args[6] {
                V::Global(Global::Dtype(e, k)) => self.tensor(&args, Some((*e, *k))),
                _ => Err("rebuilds a tensor whose dtype is not a torch dtype".into()),
            },
            Global::RebuildParameter if (2..=4).contains(&args.len()) => match &args[0] {
                V::Tensor(t) => Ok(V::Tensor(t.clone())),
                v => Err(format!("makes a parameter of a {}", v.kind())),
            },
            _ => Err(format!("calls {} with {} arguments", g.name(), args.len())),
        }
    }

    /// `(storage, storage_offset, size, stride, ...)`; `dtype` for v3.
    fn tensor(&mut self, a: &[V], dtype: Option<(u64, Kind)>) -> Result<V, String> {
        let V::Storage(s) = &a[0] else {
            return Err(format!(
                "rebuilds a tensor from a {}, not a storage",
                a[0].kind()
            ));
        };
        let uint = |v: &V, what: &str| match v {
            V::Int(i) => u64::try_from(*i).map_err(|_| {
                format!(
                    "rebuilds a tensor of storage {} with a negative {what} ({i})",
                    s.key
                )
            }),
            v => Err(format!(
                "rebuilds a tensor with a {} as its {what}",
                v.kind()
            )),
        };
        let dims = |v: &V, what: &str| match v {
            V::Tuple(t) => t
                .iter()
                .map(|x| uint(x, what))
                .collect::<Result<Vec<_>, _>>(),
            v => Err(format!(
                "rebuilds a tensor with a {} as its {what}",
                v.kind()
            )),
        };
        let offset = uint(&a[1], "offset")?;
        let size = dims(&a[2], "size")?;
        let stride = dims(&a[3], "stride")?;
        if size.len() != stride.len() {
            return Err(format!(
                "rebuilds a tensor of storage {} with {} sizes but {} strides",
                s.key,
                size.len(),
                stride.len()
            ));
        }
        let s = s.clone();
        let (elem, kind) = match dtype {
            Some(d) => d,
            None => (s.elem, s.kind),
        };
        let t = Rc::new(TensorRef {
            storage: s,
            offset,
            size,
            stride,
            kind,
            elem,
        });
        Ok(V::Tensor(t))
    }
}
