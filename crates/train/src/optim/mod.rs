//! The optimizer: AdamW over parameter groups, learning-rate schedules, gradient clipping and
//! resumable state.
//!
//! Groups are (module, decay) pairs — vision tower, merger/aligner, language model, coordinate
//! rows, each split into decayed weights and non-decayed norms/biases — assigned by parameter
//! name ([`groups`]); each module has its own base rate (`optim.lr.*`), every group follows one
//! schedule ([`schedule`]).

mod adamw;
pub mod groups;
pub mod schedule;

pub use adamw::{AdamW, Excluded, GroupSummary, STATE_META, STATE_TENSORS, StepStats};
pub use groups::GroupKey;
pub use schedule::LrSchedule;
