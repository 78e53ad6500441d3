//! The rollout machine through its public API: the story on a manual clock, and the
//! spec docs/rollouts.md shows.

mod docs;
mod story;
