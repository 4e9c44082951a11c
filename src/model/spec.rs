//! The parameter vocabulary shared by every architecture: [`SpecBuilder`]
//! declares each parameter and buffer under its PyTorch name, with its
//! shape, role and initialisation.

use tch::Kind;

use super::{Init, ParamSpec, Role};

/// Declares parameters in state-dict order.
#[derive(Default)]
pub(crate) struct SpecBuilder {
    pub specs: Vec<ParamSpec>,
}

impl SpecBuilder {
    fn push(&mut self, name: String, shape: Vec<i64>, init: Init, role: Role, kind: Kind) {
        self.specs.push(ParamSpec {
            name,
            shape,
            init,
            role,
            kind,
        });
    }

    /// A convolution. `he` selects the reference implementation's
    /// N(0, √(2/(k²·out))) weights and zero bias; otherwise PyTorch's default
    /// U(±1/√fan_in).
    pub fn conv(&mut self, name: &str, cin: i64, cout: i64, k: i64, bias: bool, he: bool) {
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
        self.push(
            format!("{name}.weight"),
            vec![cout, cin, k, k],
            wi,
            Role::Weight,
            Kind::Float,
        );
        if bias {
            self.push(
                format!("{name}.bias"),
                vec![cout],
                bi,
                Role::Weight,
                Kind::Float,
            );
        }
    }

    /// A linear layer with PyTorch's default initialisation.
    pub fn linear(&mut self, name: &str, fin: i64, fout: i64) {
        let b = 1.0 / (fin as f64).sqrt();
        self.push(
            format!("{name}.weight"),
            vec![fout, fin],
            Init::Uniform(b),
            Role::Weight,
            Kind::Float,
        );
        self.push(
            format!("{name}.bias"),
            vec![fout],
            Init::Uniform(b),
            Role::Weight,
            Kind::Float,
        );
    }

    /// BatchNorm2d: affine weight/bias plus running buffers, as in PyTorch.
    pub fn bn(&mut self, name: &str, c: i64) {
        self.push(
            format!("{name}.weight"),
            vec![c],
            Init::Ones,
            Role::Weight,
            Kind::Float,
        );
        self.push(
            format!("{name}.bias"),
            vec![c],
            Init::Zeros,
            Role::Weight,
            Kind::Float,
        );
        self.push(
            format!("{name}.running_mean"),
            vec![c],
            Init::Zeros,
            Role::Buffer,
            Kind::Float,
        );
        self.push(
            format!("{name}.running_var"),
            vec![c],
            Init::Ones,
            Role::Buffer,
            Kind::Float,
        );
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
