//! The epilogue: what is done to each convolution sum before it is written,
//! `y = act(alpha · conv(x, w) + bias + beta · residual)`.
//!
//! The GPU kernels apply it in their epilogue (or in the split reduction, which then sees
//! the complete sums), the CPU backend when it stores a block of outputs, the oracles in
//! float64. Never a separate pass over the output.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The activation applied last.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x`.
    #[default]
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `x · sigmoid(x)` (also called swish).
    Silu,
    /// `x · Φ(x) = x/2 · (1 + erf(x/√2))`: PyTorch's default GELU.
    Gelu,
    /// `x/2 · (1 + tanh(√(2/π) · (x + 0.044715·x³)))`: PyTorch's `approximate="tanh"`.
    GeluTanh,
}

impl Activation {
    /// Every activation, in the order of their codes.
    pub const ALL: [Activation; 5] = [
        Activation::Identity,
        Activation::Relu,
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
    ];

    /// The name used by the macro, the manifest and flags: `identity`, `relu`, `silu`,
    /// `gelu`, `gelu_tanh`.
    pub const fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
        }
    }

    /// The code the kernels read from `ConvParams::activation` (the index in
    /// [`Activation::ALL`]; `enum Im2winActivation` in `codegen/templates/im2win/epilogue.cuh`).
    pub const fn code(self) -> i32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Silu => 2,
            Activation::Gelu => 3,
            Activation::GeluTanh => 4,
        }
    }

    /// The activation in float64, as the oracles compute it.
    pub fn apply_f64(self, x: f64) -> f64 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
        }
    }

    /// The activation in float32, as the CPU backend computes it.
    #[inline]
    pub fn apply_f32(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                // √(2/π)
                const K: f32 = 0.797_884_6;
                let inner = K * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an activation name did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown activation `{0}`: expected `identity`, `relu`, `silu`, `gelu` or `gelu_tanh`")]
pub struct ActivationParseError(String);

impl FromStr for Activation {
    type Err = ActivationParseError;

    /// `identity` (or `none`), `relu`, `silu`, `gelu`, `gelu_tanh`, in any case.
    fn from_str(text: &str) -> Result<Self, ActivationParseError> {
        let t = text.trim().to_ascii_lowercase();
        if t == "none" {
            return Ok(Activation::Identity);
        }
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == t)
            .ok_or_else(|| ActivationParseError(text.to_string()))
    }
}

/// `y = act(alpha · conv(x, w) + bias + beta · residual)`: the scaling, the optional
/// residual operand (a tensor of the output's shape and layout, e.g. ResNet's skip
/// connection) and the activation. The bias is given with the call, as before.
///
/// [`Epilogue::default`] (`alpha` 1, no residual, identity) is the plain convolution.
/// Two epilogues are equal when their fields are bit for bit equal.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Epilogue {
    /// The activation applied last.
    pub activation: Activation,
    /// The factor of the convolution's sums (before the bias is added).
    pub alpha: f32,
    /// Whether the call passes a residual tensor.
    pub residual: bool,
    /// The factor of the residual (ignored without one).
    pub beta: f32,
}

impl Epilogue {
    /// The plain convolution: `y = conv(x, w) + bias`.
    pub const IDENTITY: Epilogue = Epilogue {
        activation: Activation::Identity,
        alpha: 1.0,
        residual: false,
        beta: 0.0,
    };

    /// `y = act(conv(x, w) + bias)`.
    pub const fn activation(activation: Activation) -> Epilogue {
        Epilogue {
            activation,
            ..Epilogue::IDENTITY
        }
    }

    /// The same epilogue with a residual tensor added with factor `beta`.
    pub const fn with_residual(mut self, beta: f32) -> Epilogue {
        self.residual = true;
        self.beta = beta;
        self
    }

    /// The same epilogue with the sums scaled by `alpha`.
    pub const fn with_alpha(mut self, alpha: f32) -> Epilogue {
        self.alpha = alpha;
        self
    }

    /// The same epilogue with another activation.
    pub const fn with_activation(mut self, activation: Activation) -> Epilogue {
        self.activation = activation;
        self
    }

    /// Whether this is the plain convolution (`alpha` 1, no residual, identity).
    pub fn is_identity(&self) -> bool {
        *self == Epilogue::IDENTITY
    }

    /// The value written for convolution sum `sum`, bias `bias` and residual `residual`
    /// (ignored without one), in float64: the oracles' epilogue.
    pub fn apply_f64(&self, sum: f64, bias: f64, residual: f64) -> f64 {
        let mut v = f64::from(self.alpha) * sum + bias;
        if self.residual {
            v += f64::from(self.beta) * residual;
        }
        self.activation.apply_f64(v)
    }

    /// The same in float32, in the kernels' order: `alpha · sum + bias`, then
    /// `+ beta · residual`, then the activation.
    #[inline]
    pub fn apply_f32(&self, sum: f32, bias: f32, residual: f32) -> f32 {
        let mut v = self.alpha.mul_add(sum, bias);
        if self.residual {
            v = self.beta.mul_add(residual, v);
        }
        self.activation.apply_f32(v)
    }

    /// The fields as bits, for equality and hashing.
    fn bits(&self) -> (Activation, u32, bool, u32) {
        (
            self.activation,
            self.alpha.to_bits(),
            self.residual,
            self.beta.to_bits(),
        )
    }
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue::IDENTITY
    }
}

impl PartialEq for Epilogue {
    fn eq(&self, other: &Self) -> bool {
        self.bits() == other.bits()
    }
}

impl Eq for Epilogue {}

impl Hash for Epilogue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bits().hash(state);
    }
}

impl fmt::Display for Epilogue {
    /// E.g. `relu(conv + bias)`, `relu(2·conv + bias + 0.5·residual)`, `conv + bias`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut inner = String::new();
        if self.alpha != 1.0 {
            inner.push_str(&format!("{}·", self.alpha));
        }
        inner.push_str("conv + bias");
        if self.residual {
            if self.beta == 1.0 {
                inner.push_str(" + residual");
            } else {
                inner.push_str(&format!(" + {}·residual", self.beta));
            }
        }
        match self.activation {
            Activation::Identity => f.write_str(&inner),
            act => write!(f, "{act}({inner})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_their_definitions() {
        let gelu = |x: f64| Activation::Gelu.apply_f64(x);
        assert_eq!(gelu(0.0), 0.0);
        // Φ(1) = 0.841344746...
        assert!((gelu(1.0) - 0.841_344_746_068_543).abs() < 1e-12);
        assert!((Activation::GeluTanh.apply_f64(1.0) - 0.841_191_990_607_477_2).abs() < 1e-12);
        assert!((Activation::Silu.apply_f64(1.0) - 0.731_058_578_630_004_9).abs() < 1e-12);
        assert_eq!(Activation::Relu.apply_f64(-3.0), 0.0);
        for act in Activation::ALL {
            for x in [-4.0f32, -1.5, -0.25, 0.0, 0.3, 2.0, 7.5] {
                let single = f64::from(act.apply_f32(x));
                let double = act.apply_f64(f64::from(x));
                assert!(
                    (single - double).abs() <= 1e-6 * (1.0 + double.abs()),
                    "{act} at {x}"
                );
            }
            assert_eq!(act.name().parse::<Activation>(), Ok(act));
        }
    }

    #[test]
    fn epilogue_combines_in_order() {
        let e = Epilogue::activation(Activation::Relu)
            .with_alpha(2.0)
            .with_residual(0.5);
        assert_eq!(e.apply_f64(1.0, 0.25, -8.0), 0.0);
        assert_eq!(e.apply_f64(1.0, 0.25, 2.0), 3.25);
        assert_eq!(e.to_string(), "relu(2·conv + bias + 0.5·residual)");
        assert!(Epilogue::default().is_identity());
        assert!(!e.is_identity());
        // The factor of an absent residual does not matter to the value.
        let no_res = Epilogue {
            beta: 3.0,
            ..Epilogue::IDENTITY
        };
        assert_eq!(no_res.apply_f64(1.0, 0.0, 100.0), 1.0);
    }
}
