//! Every validation error of `Conv2dProblem::shape`, and output shapes against PyTorch.

use im2win_runtime::problem::{MAX_DIM, MAX_ELEMENTS};
use im2win_runtime::{Conv2dProblem, Error, Padding};

/// A valid problem every error case below breaks in one field.
const VALID: Conv2dProblem = Conv2dProblem::new([2, 3, 8, 9], [4, 3, 3, 3]);

/// The fields of a problem by the names `Error::ZeroSize` and `Error::TooLarge` use.
fn set_field(mut problem: Conv2dProblem, name: &str, value: usize) -> Conv2dProblem {
    match name {
        "batch" => problem.input[0] = value,
        "in_channels" => problem.input[1] = value,
        "in_height" => problem.input[2] = value,
        "in_width" => problem.input[3] = value,
        "out_channels" => problem.filter[0] = value,
        "filter_channels" => problem.filter[1] = value,
        "filter_height" => problem.filter[2] = value,
        "filter_width" => problem.filter[3] = value,
        "stride_h" => problem.stride[0] = value,
        "stride_w" => problem.stride[1] = value,
        "dilation_h" => problem.dilation[0] = value,
        "dilation_w" => problem.dilation[1] = value,
        "groups" => problem.groups = value,
        "pad_top" => problem.padding.top = value,
        "pad_bottom" => problem.padding.bottom = value,
        "pad_left" => problem.padding.left = value,
        "pad_right" => problem.padding.right = value,
        _ => panic!("unknown field {name}"),
    }
    problem
}

const SIZE_FIELDS: [&str; 13] = [
    "batch",
    "in_channels",
    "in_height",
    "in_width",
    "out_channels",
    "filter_channels",
    "filter_height",
    "filter_width",
    "stride_h",
    "stride_w",
    "dilation_h",
    "dilation_w",
    "groups",
];
const PAD_FIELDS: [&str; 4] = ["pad_top", "pad_bottom", "pad_left", "pad_right"];

fn too_large(problem: &Conv2dProblem) -> (&'static str, u128, u128) {
    match problem.shape() {
        Err(Error::TooLarge { what, value, limit }) => (what, value, limit),
        other => panic!("expected TooLarge for {problem:?}, got {other:?}"),
    }
}

#[test]
fn the_base_problem_is_valid() {
    let shape = VALID.shape().unwrap();
    assert_eq!(shape.output, [2, 4, 6, 7]);
    assert_eq!(shape.win_width, 9);
    assert_eq!(shape.input_len, 2 * 3 * 8 * 9);
    assert_eq!(shape.filter_len, 4 * 3 * 3 * 3);
    assert_eq!(shape.output_len, 2 * 4 * 6 * 7);
    assert_eq!(shape.im2win_len, 2 * 3 * 6 * 9 * 3);
    assert_eq!(shape.reduction, 27);
    assert_eq!(shape.pixels, 2 * 6 * 7);
    VALID.validate().unwrap();
}

#[test]
fn every_zero_field() {
    for name in SIZE_FIELDS {
        let result = set_field(VALID, name, 0).shape();
        assert!(
            matches!(result, Err(Error::ZeroSize { name: n }) if n == name),
            "{name} = 0: {result:?}"
        );
    }
    // Zero padding is fine.
    for name in PAD_FIELDS {
        set_field(VALID, name, 0).validate().unwrap();
    }
}

#[test]
fn filter_larger_than_padded_input() {
    // Height: 4 rows against 3; width: 4 columns against 3.
    let result = Conv2dProblem::new([1, 1, 3, 10], [1, 1, 4, 3]).shape();
    assert!(
        matches!(
            result,
            Err(Error::FilterLargerThanInput {
                axis: "height",
                filter: 4,
                padded_input: 3
            })
        ),
        "{result:?}"
    );
    let result = Conv2dProblem::new([1, 1, 10, 3], [1, 1, 3, 4]).shape();
    assert!(
        matches!(
            result,
            Err(Error::FilterLargerThanInput {
                axis: "width",
                filter: 4,
                padded_input: 3
            })
        ),
        "{result:?}"
    );
    // Dilation counts: 3 taps at dilation 2 span 5 > 4 (height) and 7 > 6 (width).
    let result = Conv2dProblem::new([1, 1, 4, 9], [1, 1, 3, 1])
        .with_dilation([2, 1])
        .shape();
    assert!(
        matches!(
            result,
            Err(Error::FilterLargerThanInput {
                axis: "height",
                filter: 5,
                padded_input: 4
            })
        ),
        "{result:?}"
    );
    let result = Conv2dProblem::new([1, 1, 9, 6], [1, 1, 1, 4])
        .with_dilation([1, 2])
        .shape();
    assert!(
        matches!(
            result,
            Err(Error::FilterLargerThanInput {
                axis: "width",
                filter: 7,
                padded_input: 6
            })
        ),
        "{result:?}"
    );
    // Padding counts, on either side: a filter exactly as large as the padded input fits.
    let fits = Conv2dProblem::new([1, 1, 3, 3], [1, 1, 5, 4]).with_padding(Padding {
        top: 2,
        bottom: 0,
        left: 0,
        right: 1,
    });
    assert_eq!(fits.output_shape().unwrap(), [1, 1, 1, 1]);
    let result = fits
        .with_padding(Padding {
            top: 1,
            ..fits.padding
        })
        .shape();
    assert!(
        matches!(
            result,
            Err(Error::FilterLargerThanInput {
                axis: "height",
                filter: 5,
                padded_input: 4
            })
        ),
        "{result:?}"
    );
}

#[test]
fn groups_and_channels() {
    let result = VALID.with_groups(2).shape();
    assert!(
        matches!(result, Err(Error::BadGroups { groups: 2, .. })),
        "{result:?}"
    );
    let result = Conv2dProblem::new([1, 3, 8, 8], [4, 2, 3, 3]).shape();
    assert!(
        matches!(
            result,
            Err(Error::ChannelMismatch {
                input_channels: 3,
                filter_channels: 2
            })
        ),
        "{result:?}"
    );
}

#[test]
fn every_field_past_int_is_too_large() {
    let big = MAX_DIM + 1; // 2^31
    assert_eq!(big, 1 << 31);
    for name in SIZE_FIELDS.into_iter().chain(PAD_FIELDS) {
        let problem = set_field(VALID, name, big);
        assert_eq!(
            too_large(&problem),
            (name, big as u128, MAX_DIM as u128),
            "{name}"
        );
    }
    // MAX_DIM itself passes the per-field check (here it is the whole problem's only
    // large value).
    Conv2dProblem::new([MAX_DIM, 1, 1, 1], [1, 1, 1, 1])
        .validate()
        .unwrap();
    Conv2dProblem::new([1, 1, 1, 1], [1, 1, 1, 1])
        .with_stride([MAX_DIM, MAX_DIM])
        .validate()
        .unwrap();
}

#[test]
fn derived_sizes_past_int_are_too_large() {
    let dim = MAX_DIM as u128;

    // Padding on both sides of a MAX_DIM-tall input: P = 3·MAX_DIM.
    let problem = Conv2dProblem::new([1, 1, MAX_DIM, 1], [1, 1, 1, 1])
        .with_padding(Padding::symmetric(MAX_DIM, 0));
    assert_eq!(too_large(&problem), ("out_height", 3 * dim, dim));
    let problem = Conv2dProblem::new([1, 1, 1, MAX_DIM], [1, 1, 1, 1])
        .with_padding(Padding::symmetric(0, MAX_DIM));
    assert_eq!(too_large(&problem), ("out_width", 3 * dim, dim));

    // Stride 4 keeps Q ≈ 2^30, but the columns its windows span reach past 2^31.
    let problem = Conv2dProblem::new([1, 1, 1, MAX_DIM], [1, 1, 1, 1])
        .with_stride([1, 4])
        .with_padding(Padding {
            left: MAX_DIM,
            ..Padding::default()
        });
    let q = (2 * dim - 1) / 4 + 1;
    assert_eq!(too_large(&problem), ("im2win width", (q - 1) * 4 + 1, dim));

    // The same along the height: stride 2 gives P = MAX_DIM exactly, but the padded rows
    // that the windows read reach 2^32 − 3, past the kernels' int.
    let problem = Conv2dProblem::new([1, 1, MAX_DIM, 1], [1, 1, 1, 1])
        .with_stride([2, 1])
        .with_padding(Padding {
            top: MAX_DIM,
            ..Padding::default()
        });
    assert_eq!(
        too_large(&problem),
        ("padded rows read", (1 << 32) - 3, dim)
    );
    // At the boundary: H = 2^30 with 2^30 rows of top padding gives P = 2^30 windows that
    // read rows up to 2^31 − 2, i.e. MAX_DIM rows; one more row of padding is too many.
    let edge = Conv2dProblem::new([1, 1, 1 << 30, 1], [1, 1, 1, 1]).with_stride([2, 1]);
    let fits = edge.with_padding(Padding {
        top: 1 << 30,
        ..Padding::default()
    });
    assert_eq!(fits.output_shape().unwrap(), [1, 1, 1 << 30, 1]);
    let over = edge.with_padding(Padding {
        top: (1 << 30) + 1,
        ..Padding::default()
    });
    assert_eq!(too_large(&over), ("padded rows read", (1 << 31) + 1, dim));
}

#[test]
fn element_counts_past_the_limit_are_too_large() {
    let limit = MAX_ELEMENTS as u128;
    let dim = MAX_DIM as u128;

    // The reduction C·R·S must fit in int: 2^20 channels of a 64×64 filter is 2^32.
    let problem = Conv2dProblem::new([1, 1 << 20, 64, 64], [1, 1 << 20, 64, 64]);
    assert_eq!(too_large(&problem), ("reduction C·R·S", 1 << 32, dim));
    // ... and C·R·S past 2^60 is caught before multiplying further.
    let problem = Conv2dProblem::new(
        [1, MAX_DIM, MAX_DIM, MAX_DIM],
        [1, MAX_DIM, MAX_DIM, MAX_DIM],
    );
    assert_eq!(
        too_large(&problem),
        ("reduction C·R·S", dim * dim * dim, limit)
    );

    // Input 2^30 · 2^30 · 2 · 2 = 2^62.
    let problem = Conv2dProblem::new([1 << 30, 1 << 30, 2, 2], [1, 1 << 30, 1, 1]);
    assert_eq!(too_large(&problem), ("input elements", 1 << 62, limit));

    // Filter (2^31 − 1) · 2^30 > 2^60, with a small input.
    let problem = Conv2dProblem::new([1, 1 << 30, 1, 1], [MAX_DIM, 1 << 30, 1, 1]);
    assert_eq!(too_large(&problem), ("filter elements", dim << 30, limit));

    // Output 2^30 · (2^31 − 1) > 2^60 from a 2^30-element input and a 2^31-element filter.
    let problem = Conv2dProblem::new([1 << 30, 1, 1, 1], [MAX_DIM, 1, 1, 1]);
    assert_eq!(too_large(&problem), ("output elements", dim << 30, limit));

    // The im2win buffer grows with R: N = 2^23 columns of 2^20 rows, R = 2^19 gives
    // P = 2^19 + 1 and N·P·R ≈ 2^61, while input (2^43) and output (2^42) fit.
    let problem = Conv2dProblem::new([1 << 23, 1, 1 << 20, 1], [1, 1, 1 << 19, 1]);
    assert_eq!(
        too_large(&problem),
        (
            "im2win elements",
            (1 << 23) * ((1 << 19) + 1) * (1 << 19),
            limit
        )
    );

    // Exactly MAX_ELEMENTS is allowed: input 2^30 · 2^30.
    let problem = Conv2dProblem::new([1 << 30, 1, 1 << 30, 1], [1, 1, 1, 1]);
    assert_eq!(problem.shape().unwrap().input_len, MAX_ELEMENTS);
}

/// `(input [N,C,H,W], filter [K,C,R,S], stride, padding, dilation)` → PyTorch's output.
type Case = (
    [usize; 4],
    [usize; 4],
    [usize; 2],
    Padding,
    [usize; 2],
    [usize; 4],
);

#[test]
fn output_shapes_match_pytorch() {
    let none = Padding::default();
    let cases: [Case; 9] = [
        // ResNet-50 stem: 224, 7×7, stride 2, pad 3 → 112.
        (
            [1, 3, 224, 224],
            [64, 3, 7, 7],
            [2, 2],
            Padding::uniform(3),
            [1, 1],
            [1, 64, 112, 112],
        ),
        // AlexNet conv1: 227, 11×11, stride 4 → 55.
        (
            [128, 3, 227, 227],
            [96, 3, 11, 11],
            [4, 4],
            none,
            [1, 1],
            [128, 96, 55, 55],
        ),
        // 231, 11×11, stride 4 → 56 (the trailing 3 columns are read by no window).
        (
            [128, 3, 231, 231],
            [96, 3, 11, 11],
            [4, 4],
            none,
            [1, 1],
            [128, 96, 56, 56],
        ),
        // ResNet 3×3 stride-2 block: 56, pad 1 → 28; 1×1 stride-2 projection: 56 → 28.
        (
            [1, 128, 56, 56],
            [128, 128, 3, 3],
            [2, 2],
            Padding::uniform(1),
            [1, 1],
            [1, 128, 28, 28],
        ),
        (
            [1, 256, 56, 56],
            [512, 256, 1, 1],
            [2, 2],
            none,
            [1, 1],
            [1, 512, 28, 28],
        ),
        // DeepLab-style dilated 3×3: dilation 2, pad 2 keeps 32; dilation 3, no pad: 10 → 4.
        (
            [1, 8, 32, 32],
            [8, 8, 3, 3],
            [1, 1],
            Padding::uniform(2),
            [2, 2],
            [1, 8, 32, 32],
        ),
        (
            [1, 1, 10, 12],
            [1, 1, 3, 3],
            [1, 1],
            none,
            [3, 2],
            [1, 1, 4, 8],
        ),
        // Asymmetric padding (F.pad then conv2d): H 5 + 2 + 0 with R 3 → 5; W 6 + 0 + 1 with
        // S 2 and stride 2 → 3.
        (
            [1, 1, 5, 6],
            [1, 1, 3, 2],
            [1, 2],
            Padding {
                top: 2,
                bottom: 0,
                left: 0,
                right: 1,
            },
            [1, 1],
            [1, 1, 5, 3],
        ),
        // Non-square everything: H 17, pad (1,1), R 5, dil 2, stride 3 → (17+2−9)/3+1 = 4;
        // W 20, pad (0,3), S 2, dil 1, stride 2 → (20+3−2)/2+1 = 11.
        (
            [2, 4, 17, 20],
            [6, 4, 5, 2],
            [3, 2],
            Padding {
                top: 1,
                bottom: 1,
                left: 0,
                right: 3,
            },
            [2, 1],
            [2, 6, 4, 11],
        ),
    ];
    for (input, filter, stride, padding, dilation, expected) in cases {
        let problem = Conv2dProblem::new(input, filter)
            .with_stride(stride)
            .with_padding(padding)
            .with_dilation(dilation);
        assert_eq!(problem.output_shape().unwrap(), expected, "{problem:?}");
    }
}

#[test]
fn paper_layers_match_the_anchor_table() {
    // (C, H=W, K, R=S, stride, P=Q, GFLOP) from ANCHORS.md, batch 128, no padding.
    let layers = [
        (3, 227, 96, 11, 4, 55, 27.0),
        (3, 231, 96, 11, 4, 56, 28.0),
        (3, 227, 64, 7, 2, 111, 29.7),
        (32, 224, 64, 7, 2, 109, 305.2),
        (96, 24, 256, 5, 1, 20, 62.9),
        (256, 12, 512, 3, 1, 10, 30.2),
        (3, 224, 64, 3, 1, 222, 21.8),
        (64, 112, 128, 3, 1, 110, 228.4),
        (64, 56, 64, 3, 1, 54, 27.5),
        (128, 28, 128, 3, 1, 26, 25.5),
        (256, 14, 256, 3, 1, 12, 21.7),
        (512, 7, 512, 3, 1, 5, 15.1),
    ];
    for (c, hw, k, rs, s, pq, gflop) in layers {
        let problem = Conv2dProblem::new([128, c, hw, hw], [k, c, rs, rs]).with_stride([s, s]);
        assert_eq!(
            problem.output_shape().unwrap(),
            [128, k, pq, pq],
            "{problem:?}"
        );
        let flops = problem.flops().unwrap() / 1e9;
        assert!((flops - gflop).abs() < 0.051, "{problem:?}: {flops} GFLOP");
    }
}

#[test]
fn workspace_holds_t_then_the_filter_at_256_bytes() {
    // ANCHORS.md's worked example: T is 2·4·3 = 24 floats (96 bytes), F' starts at 256 and
    // holds C·R·S = 9 rows of K = 1 padded to 4 floats.
    let problem = Conv2dProblem::new([1, 1, 4, 4], [1, 1, 3, 3]);
    let shape = problem.shape().unwrap();
    assert_eq!(shape.im2win_len, 24);
    assert_eq!(problem.filter_offset_bytes(&shape), 256);
    assert_eq!(problem.workspace_bytes().unwrap(), 256 + 9 * 4 * 4);
}
