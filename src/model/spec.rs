//! The parameter vocabulary shared by every architecture: [`SpecBuilder`]
//! declares each parameter and buffer under its PyTorch name, with its
//! shape, role and initialisation.
//!
//! Channel counts are [`Ch`] values that also say which permutation may
//! reorder them (hidden units, conv channels, a residual stream), so the
//! permutation spec used by alignment ([`PermSpec`]) is derived from the
//! very calls that declare the shapes and cannot drift from them.

use tch::Kind;

use super::{Init, ParamSpec, Role};

/// A channel (or feature) axis: its size and the permutation group that
/// reorders it, if any. The network's input and output are never permuted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ch {
    pub n: i64,
    group: Option<usize>,
    /// Features per channel on a flattened axis (`flat`): the axis is
    /// `n / inner` channels of `inner` consecutive features each.
    inner: i64,
}

impl Ch {
    /// An axis no permutation touches (the input image's channels, the classes).
    pub fn fixed(n: i64) -> Ch {
        Ch {
            n,
            group: None,
            inner: 1,
        }
    }

    /// The feature axis of `self` flattened with `inner` features per channel
    /// (PyTorch's flatten of `[C, H, W]`: `inner` = H·W).
    pub fn flat(self, inner: i64) -> Ch {
        Ch {
            n: self.n * inner,
            group: self.group,
            inner: self.inner * inner,
        }
    }
}

/// A permutation group: a name (the layer or stream that owns it) and the
/// number of channels it permutes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermGroup {
    pub name: String,
    pub size: i64,
}

/// One axis of one tensor reordered by a permutation group: the axis holds
/// `size · inner` entries, channel c owning entries `c·inner .. (c+1)·inner`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermAxis {
    pub param: String,
    pub axis: usize,
    pub group: usize,
    pub inner: i64,
}

/// Which axes of which tensors each permutation group reorders: applying one
/// permutation per group to all of them leaves the network's function unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermSpec {
    pub groups: Vec<PermGroup>,
    pub axes: Vec<PermAxis>,
}

/// Declares parameters in state-dict order.
#[derive(Default)]
pub(crate) struct SpecBuilder {
    pub specs: Vec<ParamSpec>,
    pub perms: PermSpec,
}

impl SpecBuilder {
    /// A new permutation group of `n` channels named `name`.
    pub fn perm(&mut self, name: &str, n: i64) -> Ch {
        self.perms.groups.push(PermGroup {
            name: name.to_string(),
            size: n,
        });
        Ch {
            n,
            group: Some(self.perms.groups.len() - 1),
            inner: 1,
        }
    }

    fn push(&mut self, name: String, shape: Vec<i64>, init: Init, role: Role, kind: Kind) {
        self.specs.push(ParamSpec {
            name,
            shape,
            init,
            role,
            kind,
        });
    }

    /// Records that `axis` of `param` is the channel axis `ch`.
    fn axis(&mut self, param: &str, axis: usize, ch: Ch) {
        if let Some(group) = ch.group {
            self.perms.axes.push(PermAxis {
                param: param.to_string(),
                axis,
                group,
                inner: ch.inner,
            });
        }
    }

    /// A convolution. `he` selects the reference implementation's
    /// N(0, √(2/(k²·out))) weights and zero bias; otherwise PyTorch's default
    /// U(±1/√fan_in).
    pub fn conv(&mut self, name: &str, input: Ch, output: Ch, k: i64, bias: bool, he: bool) {
        let (cin, cout) = (input.n, output.n);
        let fan_in = (cin * k * k) as f64;
        let (wi, bi) = if he {
            (
                Init::Normal((2.0 / (k * k * cout) as f64).sqrt()),
                Init::Zeros,
            )
        } else {
            (
                Init::Uniform(1.0 / fan_in.sqrt()),
                Init::Uniform(1.0 / fan_in.sqrt()),
            )
        };
        let w = format!("{name}.weight");
        self.push(
            w.clone(),
            vec![cout, cin, k, k],
            wi,
            Role::Weight,
            Kind::Float,
        );
        self.axis(&w, 0, output);
        self.axis(&w, 1, input);
        if bias {
            let b = format!("{name}.bias");
            self.push(b.clone(), vec![cout], bi, Role::Weight, Kind::Float);
            self.axis(&b, 0, output);
        }
    }

    /// A linear layer with PyTorch's default initialisation.
    pub fn linear(&mut self, name: &str, input: Ch, output: Ch) {
        let init = Init::Uniform(1.0 / (input.n as f64).sqrt());
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        self.push(
            w.clone(),
            vec![output.n, input.n],
            init,
            Role::Weight,
            Kind::Float,
        );
        self.axis(&w, 0, output);
        self.axis(&w, 1, input);
        self.push(b.clone(), vec![output.n], init, Role::Weight, Kind::Float);
        self.axis(&b, 0, output);
    }

    /// BatchNorm2d: affine weight/bias plus running buffers, as in PyTorch.
    pub fn bn(&mut self, name: &str, c: Ch) {
        let entries = [
            ("weight", Init::Ones, Role::Weight),
            ("bias", Init::Zeros, Role::Weight),
            ("running_mean", Init::Zeros, Role::Buffer),
            ("running_var", Init::Ones, Role::Buffer),
        ];
        for (suffix, init, role) in entries {
            let p = format!("{name}.{suffix}");
            self.push(p.clone(), vec![c.n], init, role, Kind::Float);
            self.axis(&p, 0, c);
        }
        self.push(
            format!("{name}.num_batches_tracked"),
            vec![],
            Init::Zeros,
            Role::Buffer,
            Kind::Int64,
        );
    }
}

/// Spatial size after a pooling/conv with kernel k, stride s, padding p.
pub(crate) fn out_size(n: i64, k: i64, s: i64, p: i64) -> i64 {
    (n + 2 * p - k) / s + 1
}

/// A permutation spec as JSON (`align --perm-spec F`, the format of
/// git-re-basin's `permutation_spec`): each named permutation lists the
/// (tensor, axis) pairs it reorders, with an optional third value, the
/// features per channel of a flattened axis (a linear layer after a flatten
/// of `[C, H, W]` has H·W):
///
/// `{"format": 1, "perms": {"P_conv1": [["conv1.weight", 0], ["bn1.weight", 0],
///   ["layer1.0.conv1.weight", 1]], "P_fc": [["fc.weight", 1, 16]]}}`
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PermSpecFile {
    pub format: u32,
    pub perms: std::collections::BTreeMap<String, Vec<PermEntry>>,
}

/// `[tensor, axis]` or `[tensor, axis, features per channel]`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum PermEntry {
    Plain(String, usize),
    Flat(String, usize, i64),
}

impl PermSpec {
    /// The spec in its JSON file form.
    pub fn to_file(&self) -> PermSpecFile {
        let mut perms = std::collections::BTreeMap::new();
        for (g, group) in self.groups.iter().enumerate() {
            let entries = self
                .axes
                .iter()
                .filter(|a| a.group == g)
                .map(|a| match a.inner {
                    1 => PermEntry::Plain(a.param.clone(), a.axis),
                    n => PermEntry::Flat(a.param.clone(), a.axis, n),
                })
                .collect();
            perms.insert(format!("{g:03}:{}", group.name), entries);
        }
        PermSpecFile { format: 1, perms }
    }

    /// Reads a spec for a network whose tensors are `spec`, checking every
    /// name, axis and size (`origin` names the file in errors).
    pub fn from_file(
        file: &PermSpecFile,
        spec: &[ParamSpec],
        origin: &str,
    ) -> anyhow::Result<PermSpec> {
        use anyhow::bail;
        if file.format != 1 {
            bail!(
                "{origin}: permutation spec format {} (this modeconn reads 1)",
                file.format
            );
        }
        let mut out = PermSpec::default();
        for (name, entries) in &file.perms {
            if entries.is_empty() {
                bail!("{origin}: permutation '{name}' lists no tensor");
            }
            let group = out.groups.len();
            let mut size = None;
            for e in entries {
                let (param, axis, inner) = match e {
                    PermEntry::Plain(p, a) => (p, *a, 1),
                    PermEntry::Flat(p, a, n) => (p, *a, *n),
                };
                let Some(s) = spec.iter().find(|s| &s.name == param) else {
                    bail!("{origin}: permutation '{name}' names '{param}', which the network does not have");
                };
                if axis >= s.shape.len() {
                    bail!("{origin}: '{param}' has {} axes, so axis {axis} (permutation '{name}') does not exist", s.shape.len());
                }
                if inner < 1 || s.shape[axis] % inner != 0 {
                    bail!("{origin}: axis {axis} of '{param}' has {} entries, which {inner} features per channel do not divide", s.shape[axis]);
                }
                let n = s.shape[axis] / inner;
                match size {
                    None => size = Some(n),
                    Some(m) if m != n => bail!(
                        "{origin}: permutation '{name}' reorders {m} channels, but axis {axis} of '{param}' has {n}"
                    ),
                    _ => {}
                }
                if out.axes.iter().any(|a| &a.param == param && a.axis == axis) {
                    bail!("{origin}: axis {axis} of '{param}' is listed twice");
                }
                out.axes.push(PermAxis {
                    param: param.clone(),
                    axis,
                    group,
                    inner,
                });
            }
            out.groups.push(PermGroup {
                name: name.clone(),
                size: size.unwrap_or(0),
            });
        }
        Ok(out)
    }
}
