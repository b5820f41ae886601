//! TensorBoard event files, written directly: TFRecord framing (length, masked
//! CRC32C of the length, payload, masked CRC32C of the payload) around `Event`
//! protobufs holding scalar, histogram, image, text and hparams summaries. Knows
//! nothing of candle or SQL. A reader that checks every CRC is included for tests.

pub mod proto;

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use proto::*;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32C (Castagnoli), as TFRecord uses.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC: rotate right by 15 and add a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A histogram in TensorBoard's shape: right edges and counts.
#[derive(Clone, Debug, Default)]
pub struct Histo {
    pub min: f64,
    pub max: f64,
    pub num: f64,
    pub sum: f64,
    pub sum_squares: f64,
    pub bucket_limit: Vec<f64>,
    pub bucket: Vec<f64>,
}

/// A hyper-parameter value.
#[derive(Clone, Debug, PartialEq)]
pub enum HValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

fn pb(v: &HValue) -> PbValue {
    PbValue {
        kind: Some(match v {
            HValue::Number(n) => PbKind::NumberValue(*n),
            HValue::Text(s) => PbKind::StringValue(s.clone()),
            HValue::Bool(b) => PbKind::BoolValue(*b),
        }),
    }
}

/// Writes one event file.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<seconds>.<host>` and writes the version record.
    pub fn create(dir: &Path, host: &str) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let path = dir.join(format!("events.out.tfevents.{}.{host}", now_secs() as u64));
        let f = File::create(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let mut w = EventWriter {
            out: BufWriter::new(f),
            path,
        };
        w.event(Event {
            wall_time: now_secs(),
            step: 0,
            what: Some(EventWhat::FileVersion("brain.Event:2".into())),
        })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn event(&mut self, e: Event) -> Result<()> {
        let data = e.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let io = |e| Error::Io {
            path: self.path.clone(),
            source: e,
        };
        self.out.write_all(&len).map_err(io)?;
        self.out
            .write_all(&masked_crc(&len).to_le_bytes())
            .map_err(io)?;
        self.out.write_all(&data).map_err(io)?;
        self.out
            .write_all(&masked_crc(&data).to_le_bytes())
            .map_err(io)
    }

    fn value(&mut self, step: i64, value: SummaryValue) -> Result<()> {
        self.event(Event {
            wall_time: now_secs(),
            step,
            what: Some(EventWhat::Summary(Summary { value: vec![value] })),
        })
    }

    pub fn scalar(&mut self, tag: &str, step: i64, v: f32) -> Result<()> {
        self.value(
            step,
            SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(ValueKind::SimpleValue(v)),
            },
        )
    }

    pub fn histogram(&mut self, tag: &str, step: i64, h: &Histo) -> Result<()> {
        let histo = HistogramProto {
            min: h.min,
            max: h.max,
            num: h.num,
            sum: h.sum,
            sum_squares: h.sum_squares,
            bucket_limit: h.bucket_limit.clone(),
            bucket: h.bucket.clone(),
        };
        self.value(
            step,
            SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(ValueKind::Histo(histo)),
            },
        )
    }

    /// A PNG image (`channels`: 1 gray, 3 RGB, 4 RGBA).
    pub fn image_png(
        &mut self,
        tag: &str,
        step: i64,
        png: &[u8],
        width: u32,
        height: u32,
        channels: u32,
    ) -> Result<()> {
        let img = Image {
            height: height as i32,
            width: width as i32,
            colorspace: channels as i32,
            encoded_image_string: png.to_vec(),
        };
        self.value(
            step,
            SummaryValue {
                tag: tag.into(),
                metadata: None,
                value: Some(ValueKind::Image(img)),
            },
        )
    }

    /// Text for the text plugin (rendered as Markdown).
    pub fn text(&mut self, tag: &str, step: i64, text: &str) -> Result<()> {
        let metadata = SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: "text".into(),
                content: vec![],
            }),
            data_class: 2,
            ..Default::default()
        };
        let tensor = TensorProto {
            dtype: 7,
            tensor_shape: Some(TensorShapeProto { dim: vec![] }),
            float_val: vec![],
            string_val: vec![text.as_bytes().to_vec()],
        };
        self.value(
            step,
            SummaryValue {
                tag: tag.into(),
                metadata: Some(metadata),
                value: Some(ValueKind::Tensor(tensor)),
            },
        )
    }

    fn hparams(&mut self, tag: &str, data: HParamsData) -> Result<()> {
        let content = HParamsPluginData {
            version: 0,
            data: Some(data),
        }
        .encode_to_vec();
        let metadata = SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: "hparams".into(),
                content,
            }),
            ..Default::default()
        };
        // hparams' NULL_TENSOR: float, shape (0,); the plugin reads only the metadata
        let tensor = TensorProto {
            dtype: 1,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![TensorShapeDim { size: 0 }],
            }),
            float_val: vec![],
            string_val: vec![],
        };
        self.value(
            0,
            SummaryValue {
                tag: tag.into(),
                metadata: Some(metadata),
                value: Some(ValueKind::Tensor(tensor)),
            },
        )
    }

    /// The experiment: every swept parameter with its values, and the metric tags.
    pub fn hparams_experiment(
        &mut self,
        name: &str,
        description: &str,
        hparams: &[(String, Vec<HValue>)],
        metrics: &[(String, String)],
    ) -> Result<()> {
        let hparam_infos = hparams
            .iter()
            .map(|(n, vals)| HParamInfo {
                name: n.clone(),
                display_name: n.clone(),
                description: String::new(),
                r#type: match vals.first() {
                    Some(HValue::Number(_)) => 3,
                    Some(HValue::Bool(_)) => 2,
                    _ => 1,
                },
                domain_discrete: Some(ListValue {
                    values: vals.iter().map(pb).collect(),
                }),
            })
            .collect();
        let metric_infos = metrics
            .iter()
            .map(|(tag, display)| MetricInfo {
                name: Some(MetricName {
                    group: String::new(),
                    tag: tag.clone(),
                }),
                display_name: display.clone(),
                description: String::new(),
                dataset_type: 0,
            })
            .collect();
        let e = Experiment {
            description: description.into(),
            user: String::new(),
            time_created_secs: now_secs(),
            hparam_infos,
            metric_infos,
            name: name.into(),
        };
        self.hparams("_hparams_/experiment", HParamsData::Experiment(e))
    }

    /// A trial's hyper-parameter values (one session per trial folder).
    pub fn hparams_session_start(
        &mut self,
        values: &[(String, HValue)],
        group: &str,
    ) -> Result<()> {
        let s = SessionStartInfo {
            hparams: values.iter().map(|(k, v)| (k.clone(), pb(v))).collect(),
            model_uri: String::new(),
            monitor_url: String::new(),
            group_name: group.into(),
            start_time_secs: now_secs(),
        };
        self.hparams(
            "_hparams_/session_start_info",
            HParamsData::SessionStartInfo(s),
        )
    }

    /// The trial's end: `success` or failure.
    pub fn hparams_session_end(&mut self, success: bool) -> Result<()> {
        self.hparams(
            "_hparams_/session_end_info",
            HParamsData::SessionEndInfo(SessionEndInfo {
                status: if success { 1 } else { 2 },
                end_time_secs: now_secs(),
            }),
        )
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e,
        })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// Reads every event of a file, checking both CRCs of every record.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    let corrupt = |message: String| Error::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if i + 12 > bytes.len() {
            return Err(corrupt(format!("truncated record header at byte {i}")));
        }
        let len_bytes = &bytes[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().expect("4 bytes"));
        if crc != masked_crc(len_bytes) {
            return Err(corrupt(format!("bad length CRC at byte {i}")));
        }
        let start = i + 12;
        if start + len + 4 > bytes.len() {
            return Err(corrupt(format!("truncated record at byte {i}")));
        }
        let data = &bytes[start..start + len];
        let crc = u32::from_le_bytes(
            bytes[start + len..start + len + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if crc != masked_crc(data) {
            return Err(corrupt(format!("bad data CRC at byte {start}")));
        }
        out.push(Event::decode(data).map_err(|e| corrupt(format!("record at byte {i}: {e}")))?);
        i = start + len + 4;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_values() {
        // RFC 3720 test vectors for CRC-32C
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn round_trip_every_summary_kind() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path(), "host").unwrap();
        w.scalar("loss/train", 1, 0.5).unwrap();
        w.histogram(
            "w",
            2,
            &Histo {
                min: -1.0,
                max: 1.0,
                num: 3.0,
                sum: 0.5,
                sum_squares: 1.5,
                bucket_limit: vec![0.0, 1.0],
                bucket: vec![1.0, 2.0],
            },
        )
        .unwrap();
        w.image_png("img", 3, &[137, 80, 78, 71], 2, 1, 3).unwrap();
        w.text("config", 0, "# hi").unwrap();
        w.hparams_session_start(&[("model.dropout".into(), HValue::Number(0.5))], "g")
            .unwrap();
        w.hparams_session_end(true).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let ev = read_events(&path).unwrap();
        assert_eq!(ev.len(), 7);
        assert_eq!(
            ev[0].what,
            Some(EventWhat::FileVersion("brain.Event:2".into()))
        );
        let Some(EventWhat::Summary(s)) = &ev[1].what else {
            panic!()
        };
        assert_eq!(
            (s.value[0].tag.as_str(), &s.value[0].value, ev[1].step),
            ("loss/train", &Some(ValueKind::SimpleValue(0.5)), 1)
        );
        let Some(EventWhat::Summary(s)) = &ev[5].what else {
            panic!()
        };
        let content = &s.value[0]
            .metadata
            .as_ref()
            .unwrap()
            .plugin_data
            .as_ref()
            .unwrap()
            .content;
        let hp = HParamsPluginData::decode(content.as_slice()).unwrap();
        let Some(HParamsData::SessionStartInfo(info)) = hp.data else {
            panic!()
        };
        assert_eq!(
            info.hparams["model.dropout"].kind,
            Some(PbKind::NumberValue(0.5))
        );

        // a flipped byte is caught
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_events(&path).unwrap_err().to_string().contains("CRC"));
    }
}
