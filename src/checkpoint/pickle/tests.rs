//! The scanner on hand-built pickles, opcode by opcode as torch.save writes them.

use super::*;

/// A pickle program under construction.
pub(crate) struct P(pub Vec<u8>);

impl P {
    pub fn new() -> P {
        P(vec![0x80, 2])
    }
    pub fn op(mut self, b: &[u8]) -> P {
        self.0.extend_from_slice(b);
        self
    }
    pub fn global(self, module: &str, name: &str) -> P {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    pub fn str(self, s: &str) -> P {
        let n = (s.len() as u32).to_le_bytes();
        self.op(b"X").op(&n).op(s.as_bytes())
    }
    pub fn int(self, i: i64) -> P {
        match i {
            0..=255 => self.op(&[b'K', i as u8]),
            _ => {
                let b = i.to_le_bytes();
                self.op(&[0x8a, 8]).op(&b)
            }
        }
    }
    pub fn ints(self, v: &[i64]) -> P {
        let p = v.iter().fold(self.op(b"("), |p, &i| p.int(i));
        p.op(b"t")
    }
    /// `_rebuild_tensor_v2(storage(key, type, numel), offset, size, stride, False, OrderedDict())`.
    pub fn tensor(
        self,
        key: &str,
        ty: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> P {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", ty)
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(size)
            .ints(stride)
            .op(&[0x89])
            .global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    /// `OrderedDict()` then MARK, ready for key/value pairs and [`P::items`].
    pub fn dict(self) -> P {
        self.global("collections", "OrderedDict").op(b")Rq\x00(")
    }
    /// SETITEMS, then STOP.
    pub fn items(self) -> P {
        self.op(b"u.")
    }
}

fn two_tensors() -> Vec<u8> {
    P::new()
        .dict()
        .str("w")
        .tensor("0", "FloatStorage", 6, 0, &[2, 3], &[3, 1])
        .str("b")
        .tensor("1", "LongStorage", 3, 0, &[3], &[1])
        .items()
        .0
}

#[test]
fn a_state_dict_is_read_with_its_storages_and_views() {
    let s = scan(&two_tensors()).unwrap();
    let names: Vec<_> = s.entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["w", "b"]);
    let w = &s.entries[0].1;
    assert_eq!((w.size.clone(), w.stride.clone()), (vec![2, 3], vec![3, 1]));
    assert_eq!((w.kind, w.elem), (Kind::Float, 4));
    assert_eq!(s.storages.len(), 2);
    assert_eq!(s.storages[1].bytes(), Some(24));
    assert_eq!(s.entries[1].1.kind, Kind::Int64);
}

#[test]
fn views_of_one_storage_share_it_and_a_transposed_view_fits() {
    let p = P::new()
        .dict()
        .str("a")
        .tensor("0", "FloatStorage", 10, 0, &[10], &[1])
        .str("b")
        .tensor("0", "FloatStorage", 10, 2, &[8], &[1])
        .str("t")
        .tensor("0", "FloatStorage", 10, 0, &[5, 2], &[1, 5])
        .str("z")
        .tensor("1", "FloatStorage", 0, 0, &[0], &[1])
        .items();
    let s = scan(&p.0).unwrap();
    assert_eq!(s.storages.len(), 2, "one storage per key");
    assert!(Rc::ptr_eq(&s.entries[0].1.storage, &s.entries[1].1.storage));
    assert_eq!(s.entries[3].1.numel(), Some(0));
}

#[test]
fn a_view_past_its_storage_is_refused_naming_the_tensor() {
    for (offset, size, stride) in [
        (5, vec![6], vec![1]),       // 5 + 6 > 10
        (0, vec![2, 6], vec![5, 1]), // reaches element 10
        (0, vec![4], vec![3]),       // 0, 3, 6, 9: fits; 5 elements would not
    ] {
        let p = P::new()
            .dict()
            .str("conv.weight")
            .tensor("0", "FloatStorage", 10, offset, &size, &stride)
            .items();
        let r = scan(&p.0);
        if size == [4] {
            assert!(r.is_ok(), "{r:?}");
        } else {
            let e = r.unwrap_err();
            assert!(e.contains("conv.weight") && e.contains("storage 0"), "{e}");
        }
    }
}

#[test]
fn negative_offsets_strides_and_sizes_are_refused() {
    for (offset, size, stride) in [(-1, [2], [1]), (0, [2], [-1]), (0, [-2], [1])] {
        let p = P::new()
            .dict()
            .str("w")
            .tensor("0", "FloatStorage", 10, offset, &size, &stride)
            .items();
        let e = scan(&p.0).unwrap_err();
        assert!(e.contains("negative"), "{e}");
    }
}

#[test]
fn a_global_outside_the_allow_list_is_refused_naming_it() {
    let p = P::new()
        .global("posix", "system")
        .str("touch /tmp/pwned")
        .op(&[0x85])
        .op(b"R.");
    let e = scan(&p.0).unwrap_err();
    assert!(
        e.contains("refers to posix.system, which a state dict never needs")
            && e.contains("modeconn reads only tensors"),
        "{e}"
    );
    // STACK_GLOBAL, protocol 4's form, too.
    let p = P::new()
        .op(&[0x8c, 8])
        .op(b"builtins")
        .op(&[0x8c, 4])
        .op(b"eval")
        .op(&[0x93]);
    let e = scan(&p.0).unwrap_err();
    assert!(e.contains("refers to builtins.eval"), "{e}");
}

#[test]
fn an_opcode_torch_save_does_not_write_is_refused_naming_it() {
    let p = P::new().op(b"i__main__\nX\n");
    let e = scan(&p.0).unwrap_err();
    assert!(e.contains("0x69") && e.contains("INST"), "{e}");
}

#[test]
fn every_cut_of_a_pickle_is_refused_without_panicking() {
    let good = two_tensors();
    for n in 0..good.len() {
        assert!(scan(&good[..n]).is_err(), "a cut at {n} was accepted");
    }
    // And every single-byte change is either refused or still a valid scan.
    for i in 0..good.len() {
        for b in [0u8, 0x80, 0xff, b'(', b'.'] {
            let mut bad = good.clone();
            bad[i] = b;
            let _ = scan(&bad);
        }
    }
}

#[test]
fn a_memoised_dict_filled_later_is_seen_filled() {
    // EMPTY_DICT BINPUT 0 MARK k v SETITEMS POP BINGET 0 STOP: the dict
    // returned is the one filled, so its tensor is checked.
    let p = P::new()
        .op(b"}q\x00(")
        .str("w")
        .tensor("0", "FloatStorage", 2, 0, &[4], &[1])
        .op(b"u0h\x00.");
    let e = scan(&p.0).unwrap_err();
    assert!(e.contains("tensor w"), "{e}");
}

#[test]
fn what_is_not_a_dict_of_tensors_is_refused_with_the_reason() {
    let e = scan(&P::new().op(b"]q\x00.").0).unwrap_err();
    assert!(e.contains("holds a list rather than a state dict"), "{e}");
    let ckpt = P::new().op(b"}(").str("state_dict").op(b"}").items();
    let e = scan(&ckpt.0).unwrap_err();
    assert!(
        e.contains("training checkpoint") && e.contains("'state_dict'"),
        "{e}"
    );
    let e = scan(&P::new().op(b"}(").str("epoch").int(3).items().0).unwrap_err();
    assert!(e.contains("holds a number under 'epoch'"), "{e}");
    let twice = P::new()
        .dict()
        .str("w")
        .tensor("0", "FloatStorage", 1, 0, &[1], &[1])
        .str("w")
        .tensor("0", "FloatStorage", 1, 0, &[1], &[1])
        .items();
    assert!(scan(&twice.0).unwrap_err().contains("twice"));
}

#[test]
fn one_storage_described_two_ways_is_refused() {
    let p = P::new()
        .dict()
        .str("a")
        .tensor("0", "FloatStorage", 4, 0, &[4], &[1])
        .str("b")
        .tensor("0", "DoubleStorage", 4, 0, &[4], &[1])
        .items();
    assert!(scan(&p.0).unwrap_err().contains("twice, differently"));
}

#[test]
fn metadata_parameters_and_v3_tensors_are_read() {
    // OrderedDict items, then BUILD with {'_metadata': OrderedDict()}.
    let p = P::new()
        .dict()
        .str("p")
        .global("torch._utils", "_rebuild_parameter")
        .op(b"(")
        .tensor("0", "HalfStorage", 3, 0, &[3], &[1])
        .op(&[0x88])
        .global("collections", "OrderedDict")
        .op(b")R")
        .op(b"tR")
        .str("v3")
        .global("torch._utils", "_rebuild_tensor_v3")
        .op(b"((")
        .str("storage")
        .global("torch", "BFloat16Storage")
        .str("1")
        .str("cpu")
        .int(2)
        .op(b"tQ")
        .int(0)
        .ints(&[2])
        .ints(&[1])
        .op(&[0x89])
        .op(b")")
        .global("torch", "bfloat16")
        .op(b"tR")
        .op(b"u}(")
        .str("_metadata")
        .global("collections", "OrderedDict")
        .op(b")Rub.");
    let s = scan(&p.0).unwrap();
    assert_eq!(s.entries.len(), 2);
    assert_eq!(s.entries[0].1.kind, Kind::Half);
    assert_eq!(
        (s.entries[1].1.kind, s.entries[1].1.elem),
        (Kind::BFloat16, 2)
    );
}

#[test]
fn large_integers_are_refused_not_wrapped() {
    let p = P::new().op(&[0x8a, 9]).op(&[1; 9]).op(b".");
    assert!(scan(&p.0).unwrap_err().contains("9-byte integer"));
    // A numel that would overflow in bytes is refused by the extent check.
    let p = P::new()
        .dict()
        .str("w")
        .tensor("0", "DoubleStorage", i64::MAX, 0, &[1 << 62], &[1])
        .items();
    assert!(scan(&p.0).is_err());
}
