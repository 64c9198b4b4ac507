//! Hearing the rest of the team: state changes and freed slots arrive by
//! pub/sub (so a waiting build is woken, never polled), and team events are
//! read from the capped stream as they are added. Both loops reconnect with
//! backoff on their own dedicated connections; after each (re)subscription a
//! [`Notice::Resync`] tells the daemon to refresh what it may have missed.

use super::{Notice, Team};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one stream read blocks in Redis.
const READ_BLOCK_MS: u64 = 1_000;

/// Follow the team's change channel; runs forever.
pub async fn changes(team: Arc<Team>) {
    let mut pause = BACKOFF_MIN;
    loop {
        match subscribe(&team).await {
            Some(mut pubsub) => {
                pause = BACKOFF_MIN;
                team.notify(Notice::Resync);
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(notice) = parse_change(&payload) {
                        team.notify(notice);
                    }
                }
            }
            None => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn subscribe(team: &Team) -> Option<redis::aio::PubSub> {
    let limit = team.link.timeout().max(Duration::from_millis(500));
    let connect = async {
        let mut pubsub = team.client().get_async_pubsub().await?;
        pubsub.subscribe(team.keys().changes()).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    tokio::time::timeout(limit, connect).await.ok()?.ok()
}

/// `breaker:w1` / `slot:w1`.
fn parse_change(payload: &str) -> Option<Notice> {
    let (kind, worker) = payload.split_once(':')?;
    match kind {
        "breaker" => Some(Notice::BreakerChanged(worker.to_string())),
        "slot" => Some(Notice::SlotFreed(worker.to_string())),
        _ => None,
    }
}

type StreamReply = Option<Vec<(String, Vec<(String, HashMap<String, String>)>)>>;

/// Follow the team's event stream from now on; runs forever. Events of this
/// daemon itself are skipped (it already streamed them locally).
pub async fn events(team: Arc<Team>) {
    let mut last_id = "$".to_string();
    let mut pause = BACKOFF_MIN;
    loop {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(team.link.timeout().max(Duration::from_millis(500))))
            .set_response_timeout(Some(Duration::from_millis(READ_BLOCK_MS + 2_000)));
        let mut conn = match team
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => conn,
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        pause = BACKOFF_MIN;
        loop {
            let reply: redis::RedisResult<StreamReply> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(READ_BLOCK_MS)
                .arg("COUNT")
                .arg(100)
                .arg("STREAMS")
                .arg(team.keys().events())
                .arg(&last_id)
                .query_async(&mut conn)
                .await;
            let Ok(reply) = reply else { break };
            for (_, entries) in reply.unwrap_or_default() {
                for (id, fields) in entries {
                    last_id = id;
                    if let Some(event) = team_event(&team, fields) {
                        team.notify(Notice::Event(event));
                    }
                }
            }
        }
    }
}

/// A stream entry as an event line with its `origin`, unless it is ours.
fn team_event(team: &Team, mut fields: HashMap<String, String>) -> Option<serde_json::Value> {
    let origin = fields.remove("origin")?;
    if origin == team.origin() {
        return None;
    }
    let mut event: serde_json::Value = serde_json::from_str(&fields.remove("event")?).ok()?;
    event
        .as_object_mut()?
        .insert("origin".into(), serde_json::Value::from(origin));
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_messages_name_kind_and_worker() {
        assert!(matches!(parse_change("breaker:w1"), Some(Notice::BreakerChanged(w)) if w == "w1"));
        assert!(matches!(parse_change("slot:w-2"), Some(Notice::SlotFreed(w)) if w == "w-2"));
        assert!(parse_change("other:w1").is_none());
        assert!(parse_change("garbage").is_none());
    }
}
