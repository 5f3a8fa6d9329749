//! [`AnyStrategy`]: every strategy as one serde value. It only dispatches;
//! the checkpoint a study stores is this value.

use crate::SearchError;
use crate::evolkv::EvolKv;
use crate::evopress::EvoPress;
use crate::fixed::Fixed;
use crate::greedy::Greedy;
use crate::leave_one_out::LeaveOneOut;
use crate::nsga2::LevelNsga2;
use crate::space::{Genome, Space};
use crate::strategy::{Best, FrontMember, Progress, Request, Role, Scored, Strategy};
use serde::{Deserialize, Serialize};

/// Any strategy, as one serde value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AnyStrategy {
    EvoPress(Box<EvoPress>),
    Greedy(Greedy),
    Fixed(Fixed),
    EvolKv(Box<EvolKv>),
    Nsga2(LevelNsga2),
    LeaveOneOut(LeaveOneOut),
}

impl AnyStrategy {
    fn inner(&self) -> &dyn Strategy {
        match self {
            AnyStrategy::EvoPress(s) => s.as_ref(),
            AnyStrategy::Greedy(s) => s,
            AnyStrategy::Fixed(s) => s,
            AnyStrategy::EvolKv(s) => s.as_ref(),
            AnyStrategy::Nsga2(s) => s,
            AnyStrategy::LeaveOneOut(s) => s,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Strategy {
        match self {
            AnyStrategy::EvoPress(s) => s.as_mut(),
            AnyStrategy::Greedy(s) => s,
            AnyStrategy::Fixed(s) => s,
            AnyStrategy::EvolKv(s) => s.as_mut(),
            AnyStrategy::Nsga2(s) => s,
            AnyStrategy::LeaveOneOut(s) => s,
        }
    }
}

impl Strategy for AnyStrategy {
    fn ask(&self, space: &Space) -> Vec<Request> {
        self.inner().ask(space)
    }

    fn tell(&mut self, space: &Space, results: &[Scored]) -> Result<(), SearchError> {
        self.inner_mut().tell(space, results)
    }

    fn is_done(&self) -> bool {
        self.inner().is_done()
    }

    fn best(&self) -> Option<Best> {
        self.inner().best()
    }

    fn front(&self, space: &Space) -> Vec<FrontMember> {
        self.inner().front(space)
    }

    fn anchor(&self) -> Option<Genome> {
        self.inner().anchor()
    }

    fn progress(&self) -> Progress {
        self.inner().progress()
    }

    fn metrics(&self) -> Vec<(String, f64)> {
        self.inner().metrics()
    }

    fn role(&self) -> Role {
        self.inner().role()
    }
}
