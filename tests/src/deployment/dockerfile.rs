//! The Dockerfile: what the image sets for every container.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{unsupported, Health, HealthCheck, Result};

/// One instruction of a Dockerfile (continuation lines joined).
#[derive(Debug, Clone)]
pub struct Instruction {
    /// Its keyword, upper-case.
    pub keyword: String,
    /// The rest of the line.
    pub rest: String,
}

/// A Dockerfile's stages.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Each stage's instructions, starting with its FROM.
    pub stages: Vec<Vec<Instruction>>,
}

/// What the final stage sets for a container.
#[derive(Debug, Clone, Default)]
pub struct Image {
    /// `ENV`, in order.
    pub env: Vec<(String, String)>,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
    /// `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD` (exec form).
    pub cmd: Vec<String>,
    /// `HEALTHCHECK`.
    pub health: Option<HealthCheck>,
    /// `USER`.
    pub user: Option<String>,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
}

impl Dockerfile {
    /// Reads a Dockerfile's instructions.
    pub fn parse(text: &str) -> Result<Dockerfile> {
        let mut stages: Vec<Vec<Instruction>> = Vec::new();
        let mut pending = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            if trimmed.starts_with('#') {
                continue; // a comment inside a continued instruction
            }
            if let Some(head) = trimmed.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            pending.push_str(trimmed);
            let full = std::mem::take(&mut pending);
            let (keyword, rest) = full.split_once(char::is_whitespace).unwrap_or((full.as_str(), ""));
            let instruction = Instruction { keyword: keyword.to_ascii_uppercase(), rest: rest.trim().to_owned() };
            if instruction.keyword == "FROM" {
                stages.push(Vec::new());
            }
            match stages.last_mut() {
                Some(stage) => stage.push(instruction),
                None if instruction.keyword == "ARG" => {}
                None => return Err(unsupported(format!("Dockerfile: {} before any FROM", instruction.keyword))),
            }
        }
        if stages.is_empty() {
            return Err(unsupported("Dockerfile: no FROM"));
        }
        Ok(Dockerfile { stages })
    }

    /// The final stage's instructions.
    pub fn final_stage(&self) -> &[Instruction] {
        self.stages.last().map_or(&[], Vec::as_slice)
    }

    /// What the final stage sets for containers.
    pub fn image(&self) -> Result<Image> {
        let mut image = Image::default();
        for instruction in self.final_stage() {
            let rest = instruction.rest.as_str();
            match instruction.keyword.as_str() {
                "ENV" => image.env.extend(key_values(rest)?),
                "LABEL" => image.labels.extend(key_values(rest)?),
                "VOLUME" => image.volumes.extend(exec_or_words(rest)?),
                "ENTRYPOINT" => image.entrypoint = exec_form(rest, "ENTRYPOINT")?,
                "CMD" => image.cmd = exec_form(rest, "CMD")?,
                "USER" => image.user = Some(rest.to_owned()),
                "HEALTHCHECK" => image.health = docker_healthcheck(rest)?,
                _ => {}
            }
        }
        Ok(image)
    }
}

/// `A=1 B="two words"`.
fn key_values(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for word in shell_words(text)? {
        let (key, value) =
            word.split_once('=').ok_or_else(|| unsupported(format!("Dockerfile: {word:?} is not KEY=VALUE")))?;
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Words split on blanks, with double quotes grouping (and removed).
fn shell_words(text: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut in_word) = (false, false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(unsupported(format!("Dockerfile: unbalanced quotes in {text:?}")));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn exec_form(text: &str, what: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| {
        unsupported(format!("Dockerfile: {what} {text} is not in exec form [\"...\"] (no shell in the image)"))
    })
}

fn exec_or_words(text: &str) -> Result<Vec<String>> {
    if text.starts_with('[') {
        exec_form(text, "VOLUME")
    } else {
        shell_words(text)
    }
}

fn docker_healthcheck(text: &str) -> Result<Option<HealthCheck>> {
    if text.trim() == "NONE" {
        return Ok(None);
    }
    let (options, command) =
        text.split_once("CMD").ok_or_else(|| unsupported(format!("Dockerfile: HEALTHCHECK {text}")))?;
    let mut timing = Timing::docker_defaults();
    for option in options.split_whitespace() {
        let (name, value) = option
            .strip_prefix("--")
            .and_then(|o| o.split_once('='))
            .ok_or_else(|| unsupported(format!("Dockerfile: HEALTHCHECK option {option}")))?;
        timing.set(name.replace('-', "_").as_str(), value)?;
    }
    let argv = exec_form(command.trim(), "HEALTHCHECK CMD")?;
    Ok(Some(timing.check(Health::Command(argv))))
}

/// A health check's timing as compose and Docker write it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    interval: Duration,
    timeout: Duration,
    retries: u32,
    start_period: Duration,
}

impl Timing {
    pub(super) fn docker_defaults() -> Self {
        Timing {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            retries: 3,
            start_period: Duration::ZERO,
        }
    }

    pub(super) fn set(&mut self, name: &str, value: &str) -> Result<()> {
        match name {
            "interval" => self.interval = duration(value)?,
            "timeout" => self.timeout = duration(value)?,
            "start_period" => self.start_period = duration(value)?,
            // Only how often checks run during the start period: the harness checks often anyway.
            "start_interval" => {
                duration(value)?;
            }
            "retries" => self.retries = value.parse().map_err(|_| unsupported(format!("retries: {value}")))?,
            other => return Err(unsupported(format!("health check option {other}"))),
        }
        Ok(())
    }

    pub(super) fn check(self, check: Health) -> HealthCheck {
        HealthCheck {
            check,
            give_up_after: self.start_period + (self.interval + self.timeout) * self.retries.max(1),
            timeout: self.timeout,
        }
    }
}

/// `1m30s`, `500ms`, `5s` (compose's and Docker's duration form).
fn duration(text: &str) -> Result<Duration> {
    let bad = || unsupported(format!("duration {text:?}"));
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "h" => Duration::from_secs(number * 3600),
            "m" => Duration::from_secs(number * 60),
            "s" => Duration::from_secs(number),
            "ms" => Duration::from_millis(number),
            _ => return Err(bad()),
        };
    }
    Ok(total)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_compose_writes_them() {
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(duration("5 s").is_err());
        assert!(duration("soon").is_err());
    }
}
