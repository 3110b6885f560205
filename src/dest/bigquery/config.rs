//! BigQuery options, the dataset target (`bigquery://PROJECT/DATASET`) and the REST URLs.

use std::fmt;

use serde::Deserialize;

use super::super::options::Endpoint;

/// The public REST endpoint (API and upload paths hang off it).
pub const PUBLIC_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// How batches are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One load job per batch and table, its job id derived from the batch id: exactly once.
    #[default]
    Load,
    /// `tabledata.insertAll` with an `insertId` per row: best-effort dedupe (BigQuery keeps
    /// insert ids for about a minute).
    Stream,
}

/// The BigQuery destination's own options (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BigQueryOptions {
    #[serde(default)]
    pub mode: Mode,
    /// Job location (`US`, `EU`, `europe-west1`, …); BigQuery infers it from the dataset
    /// when not given, but `jobs.get` of a job outside the US needs it.
    pub location: Option<String>,
    /// Table for events of a non-warehouse schema.
    pub table: Option<String>,
}

/// `PROJECT/DATASET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetTarget {
    pub project: String,
    pub dataset: String,
}

impl DatasetTarget {
    pub fn parse(target: &str) -> Result<Self, String> {
        let usage = "use bigquery://PROJECT/DATASET";
        match target.split('/').collect::<Vec<_>>().as_slice() {
            [project, dataset] if valid_project(project) && valid_dataset(dataset) => {
                Ok(DatasetTarget {
                    project: (*project).to_string(),
                    dataset: (*dataset).to_string(),
                })
            }
            _ => Err(format!(
                "`{target}` is not a dataset (project: letters, digits, `-`, `:`, `.`; dataset: letters, digits, `_`): {usage}"
            )),
        }
    }
}

fn valid_project(project: &str) -> bool {
    !project.is_empty()
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.'))
}

/// Dataset ids: letters, digits and underscores, at most 1,024 characters.
fn valid_dataset(dataset: &str) -> bool {
    !dataset.is_empty()
        && dataset.len() <= 1024
        && dataset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for DatasetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BigQuery dataset `{}.{}`", self.project, self.dataset)
    }
}

/// The REST URLs of one dataset.
#[derive(Debug, Clone)]
pub struct Urls {
    api: String,
    upload: String,
    project: String,
    dataset: String,
}

impl Urls {
    pub fn new(target: &DatasetTarget, endpoint: Option<&Endpoint>) -> Urls {
        let base = endpoint.map_or(PUBLIC_ENDPOINT, Endpoint::as_str);
        Urls {
            api: format!("{base}/bigquery/v2/projects/{}", target.project),
            upload: format!("{base}/upload/bigquery/v2/projects/{}", target.project),
            project: target.project.clone(),
            dataset: target.dataset.clone(),
        }
    }

    pub fn dataset(&self) -> String {
        format!("{}/datasets/{}", self.api, self.dataset)
    }

    pub fn tables(&self) -> String {
        format!("{}/tables", self.dataset())
    }

    pub fn table(&self, table: &str) -> String {
        format!("{}/{table}", self.tables())
    }

    pub fn insert_all(&self, table: &str) -> String {
        format!("{}/insertAll", self.table(table))
    }

    /// `jobs.insert` with a multipart upload.
    pub fn upload_job(&self) -> String {
        format!("{}/jobs?uploadType=multipart", self.upload)
    }

    /// `jobs.get` (with the job's location, when known).
    pub fn job(&self, job_id: &str, location: Option<&str>) -> String {
        match location {
            Some(location) => format!("{}/jobs/{job_id}?location={location}", self.api),
            None => format!("{}/jobs/{job_id}", self.api),
        }
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn dataset_id(&self) -> &str {
        &self.dataset
    }
}
