//! Line-chart figures (`along_curve`, `ensemble`, `training`) and the styling helpers shared with
//! the landscape figure: fonts, palette, axes with nice linear or log ticks, titled panels, legends.
//!
//! - [`style`]: font, colours and the dash pattern every figure uses;
//! - [`axis`]: [`Axis`], a linear or log axis fitted to the data, with its tick positions;
//! - [`panel`]: the building blocks of a figure (title, panel with grid, series, legend, text);
//! - [`along`], [`ensemble`], [`training`], [`slice`]: one file per figure.

mod along;
mod axis;
mod budget;
mod ensemble;
mod panel;
mod slice;
mod style;
mod training;

pub(crate) use along::{AlignFigure, AlongFigure, CompareFigure};
pub(crate) use axis::Axis;
pub(crate) use budget::BudgetFigure;
pub(crate) use ensemble::EnsembleFigure;
pub(crate) use panel::{draw_legend, legend_mark, panel, titled, Chart};
pub(crate) use slice::SliceFigure;
pub(crate) use style::font;
pub(crate) use training::TrainingFigure;
