//! Test helper shared by the request and reply framers' tests: a framer must give the same
//! result however its input is cut into reads.
use std::fmt::Debug;

/// Asserts that `frame`, fed `input` in two pieces split at every byte and then one byte at a
/// time, gives what it gives for `input` in one piece.
pub fn assert_every_split_agrees<T: PartialEq + Debug>(
    input: &[u8],
    frame: impl Fn(&[&[u8]]) -> T,
) {
    let whole = frame(&[input]);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(
            frame(&[a, b]),
            whole,
            "split at {at} of {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(frame(&bytes), whole, "one byte at a time");
}
