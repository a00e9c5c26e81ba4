//! How the demo shows its images: in the terminal, and as a PNG grid labelled with each
//! prediction (and the true class where it is known). Ink is dark on light in both.

use std::{convert::Infallible, path::Path};

use anyhow::{Context, Result};
use embedded_graphics::{
    mono_font::{ascii::FONT_6X10, MonoTextStyle},
    pixelcolor::Rgb888,
    prelude::*,
    text::{Baseline, Text},
};

use super::data::ImageFormat;

/// One image of the grid and what was said about it.
pub struct Labelled<'a> {
    pub pixels: &'a [u8],
    pub predicted: u8,
    pub label: Option<u8>,
}

/// The image in the terminal: two characters per pixel, darker for higher gray levels.
pub fn terminal(image: &[u8], format: ImageFormat) -> String {
    const SHADES: [&str; 5] = ["  ", "░░", "▒▒", "▓▓", "██"];
    image
        .chunks(format.side)
        .map(|row| {
            let cells: String = row
                .iter()
                .map(|&p| SHADES[(p as usize * 4).div_ceil(format.pixel_max as usize)])
                .collect();
            format!("    |{cells}|\n")
        })
        .collect()
}

/// An RGB image that embedded-graphics draws text on.
struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: usize, y: usize, [r, g, b]: [u8; 3]) {
        if x < self.width && y < self.height {
            let at = 3 * (y * self.width + x);
            self.rgb[at..at + 3].copy_from_slice(&[r, g, b]);
        }
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width as u32, self.height as u32)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;
    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        for Pixel(at, color) in pixels {
            if at.x >= 0 && at.y >= 0 {
                self.set(
                    at.x as usize,
                    at.y as usize,
                    [color.r(), color.g(), color.b()],
                );
            }
        }
        Ok(())
    }
}

const CORRECT: Rgb888 = Rgb888::new(0, 120, 0);
const WRONG: Rgb888 = Rgb888::new(200, 0, 0);
const UNKNOWN: Rgb888 = Rgb888::new(0, 0, 0);
const TRUE_CLASS: Rgb888 = Rgb888::new(90, 90, 90);
const LINE: usize = 11;
const GAP: usize = 8;

/// Writes the images as a near-square grid (up to 16 per row), each enlarged to about 112 pixels (224 for a
/// single image), with its predicted class below it: green when it is the true class, red with
/// the true class under it when not, black when the true class is unknown.
pub fn write_png_grid(images: &[Labelled], format: ImageFormat, path: &Path) -> Result<()> {
    let target = if images.len() == 1 { 224 } else { 112 };
    let scale = (target / format.side).max(1);
    let side = format.side * scale;
    let label_width = format
        .classes
        .iter()
        .map(|c| c.len() + 6)
        .max()
        .unwrap_or(0)
        * 6;
    let cell_width = side.max(label_width) + GAP;
    let cell_height = side + 2 * LINE + GAP;
    // Near-square: 16 images make 4 rows of 4.
    let columns = (1..=16).find(|c| c * c >= images.len()).unwrap_or(16);
    let rows = images.len().div_ceil(columns).max(1);
    let mut canvas = Canvas {
        width: columns * cell_width + GAP,
        height: rows * cell_height + GAP,
        rgb: vec![255; 3 * (columns * cell_width + GAP) * (rows * cell_height + GAP)],
    };
    for (n, image) in images.iter().enumerate() {
        let (x0, y0) = (
            GAP + (n % columns) * cell_width,
            GAP + (n / columns) * cell_height,
        );
        for y in 0..side {
            for x in 0..side {
                let level = image.pixels[(y / scale) * format.side + x / scale] as u32;
                let gray = (255 - level * 255 / format.pixel_max as u32) as u8;
                canvas.set(x0 + x, y0 + y, [gray; 3]);
            }
        }
        let predicted = format.classes[image.predicted as usize];
        let color = match image.label {
            None => UNKNOWN,
            Some(l) if l == image.predicted => CORRECT,
            Some(_) => WRONG,
        };
        let mut line = |text: &str, row: usize, color: Rgb888| {
            let at = Point::new(x0 as i32, (y0 + side + 2 + row * LINE) as i32);
            let style = MonoTextStyle::new(&FONT_6X10, color);
            let _ = Text::with_baseline(text, at, style, Baseline::Top).draw(&mut canvas);
        };
        line(predicted, 0, color);
        if let Some(label) = image.label.filter(|&l| l != image.predicted) {
            line(
                &format!("true: {}", format.classes[label as usize]),
                1,
                TRUE_CLASS,
            );
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(
        std::io::BufWriter::new(file),
        canvas.width as u32,
        canvas.height as u32,
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&canvas.rgb)?;
    Ok(())
}
