//! The chat log: every room message appended to the database (DESIGN §8), and the last lines of
//! a room read back so a joiner sees recent history even after a restart.

use super::{AccountError, Accounts};

/// Most lines [`Accounts::log_chat_lines`] writes at once (4 bound values each, well under
/// SQLite's limit of 32766).
pub const MAX_LINES_PER_INSERT: usize = 256;

/// One logged chat line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    /// Unix seconds.
    pub at: i64,
    /// Room name as typed by its creator (e.g. `#lobby`).
    pub room: String,
    /// Sender's nick.
    pub sender: String,
    /// Text.
    pub text: String,
}

impl Accounts {
    /// Appends a line to the chat log.
    pub async fn log_chat(&self, line: &ChatLine) -> Result<(), AccountError> {
        sqlx::query("INSERT INTO chat_log (at, room, sender, text) VALUES (?1, ?2, ?3, ?4)")
            .bind(line.at)
            .bind(&line.room)
            .bind(&line.sender)
            .bind(&line.text)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Appends several lines in one statement (one round trip and one commit); at most
    /// [`MAX_LINES_PER_INSERT`] are taken from `lines`, the count is returned.
    pub async fn log_chat_lines(&self, lines: &[ChatLine]) -> Result<usize, AccountError> {
        let lines = &lines[..lines.len().min(MAX_LINES_PER_INSERT)];
        if lines.is_empty() {
            return Ok(0);
        }
        let mut q = sqlx::QueryBuilder::new("INSERT INTO chat_log (at, room, sender, text) ");
        q.push_values(lines, |mut row, line| {
            row.push_bind(line.at)
                .push_bind(&line.room)
                .push_bind(&line.sender)
                .push_bind(&line.text);
        });
        q.build().execute(self.pool()).await?;
        Ok(lines.len())
    }

    /// The last `limit` lines of `room` (matched case-insensitively), oldest first.
    pub async fn recent_chat(&self, room: &str, limit: u32) -> Result<Vec<ChatLine>, AccountError> {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT at, room, sender, text FROM chat_log WHERE lower(room) = lower(?1) \
             ORDER BY id DESC LIMIT ?2",
        )
        .bind(room)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .rev()
            .map(|(at, room, sender, text)| ChatLine {
                at,
                room,
                sender,
                text,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recent_chat_returns_the_last_lines_oldest_first() {
        let (_dir, acc) = super::super::tests::open_temp().await;
        for i in 0..5 {
            let line = ChatLine {
                at: i,
                room: "#Lobby".into(),
                sender: "a".into(),
                text: format!("m{i}"),
            };
            acc.log_chat(&line).await.unwrap();
        }
        let got = acc.recent_chat("#lobby", 3).await.unwrap();
        let texts: Vec<_> = got.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["m2", "m3", "m4"]);
    }
}
